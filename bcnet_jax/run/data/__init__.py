"""Input: data sources, augmentation and the deterministic pipeline."""
