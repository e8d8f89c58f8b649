"""GSM8K-style calculator annotations `<<expr=value>>`: safe arithmetic and the correction of written values.

Calculator-aided decoding (evaluate/calculator.py) lets the student write `<<48/2=` and forces the true value
and `>>` into its output, as the calculator-augmented T5/GPT papers do. This module is the text side of it and
imports no JAX: expressions are parsed with `ast` and evaluated over Fractions from a whitelist of nodes,
never with eval.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from fractions import Fraction

from distill_jax.reasoning.answers import normalize_number

# An annotation whose '=' has been written: group 1 is the expression, group 2 what follows up to '>>' or the end.
_ANNOTATION = re.compile(r"<<([^<>=]*)=([^<>]*?)(>>|$)")
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s*%")  # `50%*20` is half of 20, as people write it
_MAX_POW = 64  # 2**64 is fine; 10**10**10 is not a calculator's job


class CalculatorError(ValueError):
    pass


def _eval(node: ast.AST) -> Fraction:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return Fraction(str(node.value))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _eval(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp):
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Add):
            return left + right
        if isinstance(node.op, ast.Sub):
            return left - right
        if isinstance(node.op, ast.Mult):
            return left * right
        if isinstance(node.op, (ast.Div, ast.FloorDiv)):
            if right == 0:
                raise CalculatorError("division by zero")
            return left / right if isinstance(node.op, ast.Div) else Fraction(left // right)
        if isinstance(node.op, ast.Pow):
            if right.denominator != 1 or abs(right) > _MAX_POW:
                raise CalculatorError("unsupported power")
            if left == 0 and right < 0:
                raise CalculatorError("division by zero")
            return left ** int(right)
    raise CalculatorError(f"not arithmetic: {ast.dump(node)[:60]}")


def evaluate_arithmetic(expr: str) -> Fraction:
    """Exact value of an arithmetic expression (numbers, + - * / // **, parentheses).

    Commas and `$` are ignored, `N%` means N/100 (GSM8K annotations never use `%` as modulo), `×`/`÷` accepted.
    """
    cleaned = expr.replace(",", "").replace("$", "").replace("×", "*").replace("÷", "/").strip()
    cleaned = _PERCENT.sub(r"(\1/100)", cleaned)
    if not cleaned:
        raise CalculatorError("empty expression")
    try:
        tree = ast.parse(cleaned, mode="eval")
    except SyntaxError as e:
        raise CalculatorError(f"syntax: {e.msg}") from e
    return _eval(tree)


def format_value(value: Fraction) -> str:
    """Canonical text of a calculator result (non-terminating fractions rounded as answers.normalize_number does)."""
    if value.denominator == 1:
        return str(value.numerator)
    text = normalize_number(f"{value.numerator}/{value.denominator}")
    return text if text is not None else f"{float(value):.6g}"


@dataclass(frozen=True)
class Correction:
    """Where to cut an output and what to force: `text[:cut] + forced` is the corrected prefix."""

    cut: int
    forced: str
    expression: str
    written: str


def first_correction(text: str, start: int = 0) -> Correction | None:
    """The first annotation at or after `start` whose written value is missing or wrong (or not closed).

    Returns None when every annotation from `start` on is correct and closed, or cannot be computed (a
    malformed expression is left to the student: the calculator does not guess).
    """
    for match in _ANNOTATION.finditer(text, start):
        expression, written, closing = match.group(1), match.group(2), match.group(3)
        try:
            value = format_value(evaluate_arithmetic(expression))
        except CalculatorError:
            continue
        if closing == ">>" and written.strip() == value:
            continue
        cut = match.start(2)
        return Correction(cut=cut, forced=value + ">>", expression=expression, written=written)
    return None
