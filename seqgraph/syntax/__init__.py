"""The front of the pipeline: ``.sg`` text → Lark parse tree → AST with source spans."""

from .parse import parse_source

__all__ = ["parse_source"]
