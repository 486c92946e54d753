"""Data: readers of raw logs, the ComiRec preprocessing, the synthetic dataset, tf.data pipelines."""
