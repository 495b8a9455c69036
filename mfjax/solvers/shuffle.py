"""Keyed pseudo-random orders of ``0..n-1`` in O(n) work (the epoch order of :func:`mfjax.solvers.sgd`).

A mixed-radix Feistel network is a keyed bijection of ``[0, a b)`` with
``a = ceil(sqrt(n))``, ``b = ceil(n / a)``; cycle walking restricts it to
``[0, n)`` (:func:`random_order`).  SGD uses the network on the padded domain
directly: the ``a b - n`` extra slots become masked-out entries.

References:
  Black, J., Rogaway, P. "Ciphers with arbitrary finite domains", CT-RSA 2002.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

__all__ = ["random_order"]


def _mix32(x):
    """A 32-bit integer hash (xorshift-multiply finaliser)."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def _order_domain(n: int) -> tuple[int, int]:
    """Sides ``(a, b)`` of the mixed-radix domain ``Z_a x Z_b`` used for ``0..n-1``:
    ``a = ceil(sqrt(n))``, ``b = ceil(n / a)``, so ``n <= a b < n + a``."""
    n = max(int(n), 1)
    a = math.isqrt(n - 1) + 1
    return a, -(-n // a)


def _feistel(x, keys, a: int, b: int):
    """A keyed bijection of ``[0, a b)`` (mixed-radix Feistel network).

    Write ``x = L b + R`` with ``L in Z_a``, ``R in Z_b``.  Each round maps
    ``(L, R) in Z_s x Z_t`` to ``(R, (L + F_k(R)) mod s) in Z_t x Z_s``
    (``F_k`` = hash of ``R xor key_k``), which is invertible
    (``L = (L' - F_k(R)) mod s``); the sides swap every round and the result
    is read back as ``L t + R`` in the final radix.  Unlike a balanced
    Feistel network on ``[0, 4^h)``, the domain ``a b`` exceeds ``n`` by
    less than ``a ~ sqrt(n)``, so no (or hardly any) cycle walking is needed.
    """
    left, right = x // jnp.uint32(b), x % jnp.uint32(b)
    s, t = a, b
    for k in range(keys.shape[0]):
        left, right = right, (left + _mix32(right ^ keys[k]) % jnp.uint32(s)) % jnp.uint32(s)
        s, t = t, s
    return left * jnp.uint32(t) + right


def random_order(key, n: int, rounds: int = 4) -> jax.Array:
    """A pseudo-random permutation of ``0..n-1`` in O(n) work, without sorting.

    The keyed mixed-radix Feistel network of :func:`_feistel` (``rounds``
    rounds) is a bijection of ``[0, a b)`` with ``n <= a b < n + sqrt(n) + 1``;
    cycle walking (re-apply until the value lands in ``[0, n)``) restricts it
    to a bijection of ``[0, n)`` (Black & Rogaway 2002).  Since only
    ``< 1/sqrt(n)`` of the values start outside, the walk ends after a few
    passes.  On CPU this is several times cheaper than
    ``jax.random.permutation`` or an argsort of random keys.  Different keys
    give (pseudo-)independent orders.  (:func:`sgd` uses the network on the
    padded domain directly, without the walk: the ``a b - n`` extra slots
    become masked-out entries.)

    References:
      Black, J., Rogaway, P. "Ciphers with arbitrary finite domains",
      CT-RSA 2002.
    """
    a, b = _order_domain(n)
    keys = jax.random.bits(key, (rounds,), jnp.uint32)

    def walk(x):
        return jnp.where(x >= n, _feistel(x, keys, a, b), x)

    x = _feistel(jnp.arange(n, dtype=jnp.uint32), keys, a, b)
    x = jax.lax.while_loop(lambda x: jnp.any(x >= n), walk, x)
    return x.astype(jnp.int32)
