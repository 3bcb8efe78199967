"""Rated data sets, the IQA metrics, and the evaluation protocols that join scores to ratings."""
