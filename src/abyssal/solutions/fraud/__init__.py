"""Transaction-graph fraud detection: data formats, synthetic and Bitcoin-OTC data, GAT plus
temporal features, tree baselines, rings and live scoring."""
