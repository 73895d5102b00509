"""What a source does with a record that cannot be decoded: stop with its name, or skip it.

A damaged file or record that slipped through the checks made when a source was opened (they
are cheap: headers and checksums, not every pixel) is found when training reads it. Without
`data.skip_bad_files` the run stops with an `InputError` naming it; with it, the record is
replaced by the next one that decodes (so the source keeps its length and every index still
maps to the same record, which exact resume needs), and a warning names it once per process.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from jaxdiff.validation import InputError

logger = logging.getLogger("jaxdiff.data")
SKIP_OPTION = "data.skip_bad_files"


def read_or_skip(read: Callable[[int], dict], index: int, size: int, describe: Callable[[int], str],
                 skip: bool, reported: set) -> dict:
    """`read(index)`, or with `skip` the record of the first index after it that decodes.

    Args:
      read: index -> record; raises for a record that cannot be decoded.
      index: the record asked for, in [0, size).
      size: the number of records.
      describe: index -> what the record is, for messages (e.g. "image file '/x/a.png'").
      skip: replace undecodable records instead of raising.
      reported: indices already warned about (updated).
    """
    for offset in range(size):
        current = (index + offset) % size
        try:
            return read(current)
        # Decoders raise many types for damaged data (OSError, SyntaxError, ValueError, ...).
        except Exception as error:
            if not skip:
                raise InputError(
                    f"cannot decode {describe(current)}: {type(error).__name__}: {error}. Fix "
                    f"or remove it, or set --config.{SKIP_OPTION}=True to train without the "
                    f"records that cannot be decoded") from error
            if current not in reported:
                reported.add(current)
                logger.warning("skipping %s, which cannot be decoded (%s: %s); %d skipped so "
                               "far in this process", describe(current), type(error).__name__,
                               error, len(reported))
    raise InputError(f"none of the {size} records can be decoded (the first: {describe(index)})")
