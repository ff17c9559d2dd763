"""Data: where text comes from, how it becomes token ids, how ids become batches."""
