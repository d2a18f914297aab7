"""Paths for the rows of a long page at the cost of one reverse() a view.

reverse() takes 20 to 40 µs: the gallery's tiles, five links each, spent a third of their
rendering in it at 1,000,000 predictions. A view's path differs from row to row only by its ids,
so `path_to` reverses it once with placeholder ids and each row puts its own in. Arguments that
are not ids (a variant, a share token) are part of the cached path, so they still go through
reverse() and its checks.
"""

from functools import lru_cache

from django.urls import get_script_prefix, get_urlconf, reverse

# Ids no row has (the int converter takes them), whose digits appear nowhere else in a path.
PLACEHOLDER = 9_090_909_090_909_090_000


def path_to(viewname: str, *args: int | str) -> str:
    """reverse(viewname, args=args), without reversing it again for other ids."""
    ids = [str(arg) for arg in args if is_id(arg)]
    others = tuple(None if is_id(arg) else arg for arg in args)
    return path_format(get_urlconf(), get_script_prefix(), viewname, others).format(*ids)


def is_id(arg: int | str) -> bool:
    return type(arg) is int and arg >= 0


@lru_cache(maxsize=256)
def path_format(urlconf, prefix: str, viewname: str, args: tuple[str | None, ...]) -> str:
    """The path of `viewname` as a format string, with a field for each id (None in `args`).
    `urlconf` and `prefix` are in the cache's key only: reverse() reads them from the thread."""
    placeholders = [PLACEHOLDER + n for n, arg in enumerate(args) if arg is None]
    marked = iter(placeholders)
    path = reverse(viewname, urlconf=urlconf, args=[next(marked) if a is None else a for a in args])
    path = path.replace("{", "{{").replace("}", "}}")
    for field, placeholder in enumerate(placeholders):
        path = path.replace(str(placeholder), f"{{{field}}}", 1)
    return path
