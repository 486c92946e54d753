"""Export of trained runs as TF-Serving SavedModels (``python -m export``).

Not implemented yet: the package exists so that installs and imports are
stable while the export work lands.
"""
