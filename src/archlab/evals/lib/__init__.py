"""Helpers shared by the evals (scoring, texts, intervals, report views); nothing here is registered."""
