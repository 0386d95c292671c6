"""Readers for the formats users bring, dataset fingerprints and splits.

- :mod:`abyssal.data.tables`: read CSV / Parquet tables and check their columns against a small
  declarative spec (:class:`~abyssal.data.tables.ColumnSpec`), with errors that name the file, the
  1-based data row and the column.
- :mod:`abyssal.data.fingerprint`: content hashes of files and normalised frames, recorded as the
  lineage of every model version.

Importing this package is cheap; pandas is imported by the sub-modules that need it.
"""
