"""``abyssal ui``: a web dashboard over an abyssal home (model versions and their lineage, runs
with metric curves, pipeline runs and gate decisions, benchmark leaderboards, audits, live
service metrics), server-rendered with inline SVG; read only unless a keys file lets a key move
an alias. See :mod:`abyssal.ui.app` and ``docs/ui.md``."""
