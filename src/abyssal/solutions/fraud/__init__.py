"""Transaction-graph fraud detection: data formats, synthetic data, Bitcoin-OTC, model and metrics."""
