"""What every section of the definition's schema shares: the strict model config and size bounds.

The definition (``definition.py``) and the sections tasks add to it (``tasks/<name>/section.py``)
both build on these.
"""

from __future__ import annotations

from pydantic import ConfigDict

# NaN and infinity are refused in every number (a NaN std would pass every `> 0` check)
Strict = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
# numbers are StrictInt / StrictFloat: YAML's `true` is not 1, nor "0.5" a number, nor `16.0` a
# channel count (an integer is a fine float)
# channel counts beyond any MobileNet (the largest has 1280) times the width multiplier
MAX_CHANNELS = 16384
