"""Tensor-split sweeps: the splits to try, the search, the job that survives crashes."""
