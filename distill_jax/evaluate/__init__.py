"""Evaluation from checkpoints: decoding, answers per style, voting, reports."""
