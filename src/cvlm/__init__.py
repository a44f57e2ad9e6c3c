"""cvlm: explain what a chest X-ray report generator looks at, with cyclic counterfactuals."""

__version__ = "0.1.0"
