"""abyssal: take AI models from the lab to production.

Importing the package is cheap: it pulls in no torch, pandas or optional library.
Sub-packages import what they need where they use it.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
