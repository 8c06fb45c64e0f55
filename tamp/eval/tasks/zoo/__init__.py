"""lmms-eval tasks over the toy zoo's test split (generation by exact match, multiple choice by acc)."""
