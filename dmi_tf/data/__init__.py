"""Data: raw-log readers, ComiRec preprocessing, the synthetic dataset, tf.data pipelines."""
