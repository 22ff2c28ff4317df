"""Limits: how much work one template, one definition or one event may ask of cjo.

cjo runs inside applications that take input from customers, marketers and other services.
Every limit that bounds that input lives here, with its default and its reason, so that a host
can see them in one place and raise one where its own definitions need more room.

:class:`Limits` holds the configurable ones. The constants below it are fixed, because they
keep a value storable on every storage adapter alike (PostgreSQL's ``integer`` and ``bigint``,
JSON, UTF-8 text) rather than bounding work.

The two nesting guards at the bottom run before any recursive code sees definitions data:
Python's ``json`` module and the cattrs converter recurse once per nesting level, and a deep
enough document would otherwise end in ``RecursionError`` instead of a ``DefinitionError``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Final

import attrs

from cjo.errors import DefinitionError, Problem, UsageError

__all__ = [
    "MAX_DELIVERY_ERROR",
    "MAX_ID_LENGTH",
    "MAX_INT",
    "MAX_MATCHED_TEXT",
    "MAX_PATTERN_LENGTH",
    "MAX_RETRY_AFTER",
    "MAX_TEXT",
    "MAX_TIMESTAMP",
    "MAX_VALUES",
    "MAX_VALUE_DEPTH",
    "MAX_VERSION",
    "MIN_TIMESTAMP",
    "TIMESTAMP_RANGE",
    "Limits",
    "check_json_nesting",
    "check_nesting",
]

#: Longest id (customer, event, event name, profile time zone and locale), in characters.
#: Ids are index keys; a megabyte id breaks a PostgreSQL B-tree index.
MAX_ID_LENGTH: Final = 256

#: Deepest nesting of lists and objects inside one event property or profile attribute.
MAX_VALUE_DEPTH: Final = 16

#: Most values in one event's properties or one profile update's attributes, all levels
#: together: bounds the work of checking and storing one record.
MAX_VALUES: Final = 100_000

#: Most characters of text in one event's properties or one profile update's attributes, names
#: and values at all levels together: bounds what one record adds to every stored customer
#: record and log (a 50 MB property would otherwise be stored, and read back at every load).
MAX_TEXT: Final = 1_000_000

#: Largest integer magnitude in a value: PostgreSQL ``bigint`` and SQLite's integers hold no more.
MAX_INT: Final = 2**63 - 1

#: Largest journey version: PostgreSQL ``integer``.
MAX_VERSION: Final = 2**31 - 1

#: Event timestamps must fall in [MIN_TIMESTAMP, MAX_TIMESTAMP): far enough from the ends of
#: ``datetime`` that adding the longest duration or subtracting a window never overflows.
MIN_TIMESTAMP: Final = datetime(1900, 1, 1, tzinfo=UTC)
MAX_TIMESTAMP: Final = datetime(9000, 1, 1, tzinfo=UTC)
#: That range, as errors state it.
TIMESTAMP_RANGE: Final = (
    f"from {MIN_TIMESTAMP.date()} up to, not including, {MAX_TIMESTAMP.date()} (UTC)"
)

#: Longest regular expression a text condition may use, in characters, and longest text one is
#: matched against (longer values do not match). Python's ``re`` has no time limit: bounding
#: both bounds the work of a match for patterns without nested repetition.
MAX_PATTERN_LENGTH: Final = 200
MAX_MATCHED_TEXT: Final = 10_000

#: Longest delivery error kept, in characters (a channel's ``DeliveryResult.error``, or what
#: its exception says): it is stored as the message's last error and, for a permanent failure,
#: in the customer's record as the reason their channel is blocked. An error page of megabytes
#: would otherwise be stored in each. Longer ones are cut, ending in "…".
MAX_DELIVERY_ERROR: Final = 1_000

#: Longest wait a channel's ``DeliveryResult.retry_after`` (a provider's Retry-After) can ask
#: for before the next attempt: an endpoint answering "retry in ten years" must not park a
#: message for good. A longer one is cut to this.
MAX_RETRY_AFTER: Final = timedelta(days=1)

_DEFAULT_CONDITION_DEPTH: Final = 32

# cattrs spends several Python frames on each nesting level; above this the converter could
# reach Python's default recursion limit (1000) before the nesting guard has a say.
_JSON_DEPTH_CEILING: Final = 200


@attrs.frozen(kw_only=True)
class Limits:
    """Every configurable limit, with its default. Pass one to the places that enforce them::

        Limits(max_steps_per_journey=5_000)

    Templates (enforced at every render, and at publish against a sample):

    - ``max_template_length``: characters in one content field's source.
    - ``max_loop_iterations``: loop iterations in one render of one field, all ``for`` and
      ``tablerow`` loops together (Liquid's own nested-loop limit is set to the same number);
      also the longest range, such as ``(1..n)``, a filter may be given.
    - ``max_render_output``: bytes (UTF-8) one rendered field may write, ``capture`` included.
    - ``max_template_variables``: bytes held by the variables one render assigns or captures
      (as ``sys.getsizeof`` counts them): what stops string doubling.
    - ``render_timeout``: wall-clock time one render of one field may take; ``None`` turns it
      off. A backstop for what the counts above cannot see (a slow filter on a large profile
      value); it is the only limit that depends on the machine, so it is set generously.

    Definitions (checked by ``validate_definitions``, so at every publish):

    - ``max_condition_depth``: how deeply and/or/not may nest in one condition.
    - ``max_condition_nodes``: nodes in one condition tree.
    - ``max_condition_values``: values in one ``in`` or ``not_in`` list.
    - ``max_steps_per_journey``: steps in one journey version.
    - ``max_steps_per_advance``: steps one customer may run through without a wait: the longest
      chain of sends, branches, splits and profile updates between two waits.
    - ``max_branches_per_step``: cases of a Branch, paths of a Split.
    - ``max_jumps_per_input``: journeys one input may enter through ``Jump`` steps, one after
      another (journeys that jump to each other without a wait would never stop).
    - ``max_variants_per_content``: variants (channel and locale) of one content item.
    - ``max_fields_per_variant``: fields of one variant.
    - ``max_attributes_per_update``: attributes one UpdateProfile step sets and unsets.
    - ``min_wait``: shortest Wait duration and WaitForEvent timeout, and shortest
      ``max_lifetime``, goal ``within``, re-entry ``cooldown`` / ``per`` and cap ``per``.
    - ``max_duration``: longest duration anywhere in a definition (waits, timeouts, lifetimes,
      goal windows, re-entry windows), and how far a date wait or a time condition may move
      its instant either way.
    - ``max_json_depth``: nesting of definitions data (JSON objects and lists) accepted by
      ``load_definitions`` and ``loads_definitions``. By default it follows
      ``max_condition_depth``: room for the deepest condition (two levels per and/or), the
      deepest value and the levels above them (100 for the default depth of 32).

    Catch-up (enforced by the decision core when ``run_due`` runs late):

    - ``max_messages_per_catch_up``: messages one customer may be sent by one wake-up.

    Entries (enforced by the decision core):

    - ``max_instances_per_journey``: active instances of one keyed journey (``instance_key``)
      one customer may be in at once: past it, an entry under a new key is refused (said in
      ``Outcome.not_entered``). A client sending a new key with every event would otherwise
      grow the customer's record, and the cost of each of their events, without bound.
    """

    max_template_length: int = 100_000
    max_loop_iterations: int = 10_000
    max_render_output: int = 1_000_000
    max_template_variables: int = 1_000_000
    render_timeout: timedelta | None = timedelta(seconds=1)

    max_condition_depth: int = _DEFAULT_CONDITION_DEPTH
    max_condition_nodes: int = 1_000
    max_condition_values: int = 10_000
    max_steps_per_journey: int = 1_000
    max_steps_per_advance: int = 100
    max_branches_per_step: int = 100
    max_jumps_per_input: int = 10
    max_variants_per_content: int = 100
    max_fields_per_variant: int = 50
    max_attributes_per_update: int = 100
    min_wait: timedelta = timedelta(minutes=1)
    max_duration: timedelta = timedelta(days=3_650)
    max_json_depth: int = attrs.field(
        default=attrs.Factory(lambda self: _json_depth_for(self.max_condition_depth),
                              takes_self=True)
    )

    max_messages_per_catch_up: int = 10
    max_instances_per_journey: int = 100

    def __attrs_post_init__(self) -> None:
        problems: list[str] = []
        for field in attrs.fields(type(self)):
            value = getattr(self, field.name)
            if field.name in _DURATIONS:
                if value is None and field.name == "render_timeout":
                    continue
                if not isinstance(value, timedelta):
                    problems.append(f"{field.name} must be a timedelta, got {value!r}")
                elif value <= timedelta(0):
                    problems.append(f"{field.name} must be positive, got {value}")
            elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
                problems.append(f"{field.name} must be a positive integer, got {value!r}")
        if problems:
            raise UsageError("; ".join(problems))
        if self.min_wait > self.max_duration:
            problems.append(f"min_wait {self.min_wait} is longer than max_duration "
                            f"{self.max_duration}")
        needed = _json_depth_for(self.max_condition_depth)
        if self.max_json_depth < needed:
            problems.append(
                f"max_json_depth {self.max_json_depth} leaves no room for conditions "
                f"{self.max_condition_depth} deep; it must be at least {needed}"
            )
        if self.max_json_depth > _JSON_DEPTH_CEILING:
            problems.append(
                f"max_json_depth {self.max_json_depth} is above {_JSON_DEPTH_CEILING}, where "
                "loading could reach Python's recursion limit"
            )
        if problems:
            raise UsageError("; ".join(problems))


_DURATIONS: Final = frozenset({"render_timeout", "min_wait", "max_duration"})


def _json_depth_for(condition_depth: int) -> int:
    # Two levels per and/or (the node and its list), the deepest value, and the definitions,
    # journey, steps, step, cases and case levels above a condition, with some room to spare.
    if isinstance(condition_depth, bool) or not isinstance(condition_depth, int) \
            or condition_depth < 1:
        # A bad depth is reported on its own: the default json depth derived from it would be
        # reported as a second mistake the user did not make, so it follows the default depth.
        condition_depth = _DEFAULT_CONDITION_DEPTH
    return 2 * condition_depth + MAX_VALUE_DEPTH + 20


DEFAULT_LIMITS: Final = Limits()


# --- nesting guards ----------------------------------------------------------------------------

# A JSON string, escapes included. Possessive, so an unterminated string costs one linear scan.
_JSON_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_NOT_A_BRACKET = re.compile(r"[^\[\]{}]++")


def json_nesting(text: str) -> int:
    """How deeply objects and lists nest in JSON ``text`` (0 for a scalar).

    Computed without parsing, in time linear in the text: strings are removed first (brackets
    inside them do not count), then every bracket moves the depth by one.
    """
    brackets = _NOT_A_BRACKET.sub("", _JSON_STRING.sub("", text))
    depth = deepest = 0
    for char in brackets:
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def check_json_nesting(text: str, limits: Limits = DEFAULT_LIMITS) -> None:
    """Raise ``DefinitionError`` if JSON ``text`` nests deeper than ``limits.max_json_depth``.

    Call before ``json.loads``, whose parser recurses once per level.
    """
    # Cheap exit: nesting can never exceed the number of opening brackets.
    if text.count("[") + text.count("{") <= limits.max_json_depth:
        return
    depth = json_nesting(text)
    if depth > limits.max_json_depth:
        raise DefinitionError([Problem("$", _too_deep(depth, limits))])


def check_nesting(data: object, limits: Limits = DEFAULT_LIMITS) -> None:
    """Raise ``DefinitionError`` if ``data`` (parsed JSON: dicts and lists) nests deeper than
    ``limits.max_json_depth``.

    Iterative, and it stops at the first level past the limit, so data that contains itself
    ends here too instead of looping.
    """
    stack: list[tuple[object, int]] = [(data, 0)]
    limit = limits.max_json_depth
    while stack:
        node, depth = stack.pop()
        children: Iterable[object]
        if isinstance(node, Mapping):
            children = node.values()
        elif isinstance(node, list | tuple):
            children = node
        else:
            continue
        depth += 1
        if depth > limit:
            raise DefinitionError([Problem("$", _too_deep(depth, limits, at_least=True))])
        stack.extend((child, depth) for child in children)


def _too_deep(depth: int, limits: Limits, *, at_least: bool = False) -> str:
    nested = f"at least {depth}" if at_least else str(depth)
    return (
        f"definitions nest {nested} levels deep; the limit is {limits.max_json_depth} "
        f"(a condition may nest {limits.max_condition_depth} levels of and/or/not)"
    )
