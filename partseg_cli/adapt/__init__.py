"""Few-shot and cross-category adaptation methods behind `partseg adapt --method ...`."""
