"""Explanations: Grad-CAM of the anomaly score, attention views, figure browsers. Imports the core, never the
reverse."""
