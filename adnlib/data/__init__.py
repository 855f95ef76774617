"""Data (core): MVTec-AD-layout datasets with validation, the generated demo data, normalisation and rotations."""
