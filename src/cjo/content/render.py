"""Rendering content variants with Liquid, sandboxed and within limits.

Liquid templates cannot run Python, but they can still ask for unbounded work: a loop over
``(1..1000000000000)``, a string that doubles on every iteration, a filter fed a huge range.
Every render runs under the template limits of :class:`cjo.limits.Limits`:

- Liquid's own mechanisms, configured on the environment: ``loop_iteration_limit`` (nested
  loops), ``output_stream_limit`` (output, ``capture`` included) and ``local_namespace_limit``
  (what ``assign`` and ``capture`` hold);
- a budget of loop iterations for the whole render (Liquid's limit only sees one loop nest at a
  time, so a template of many sequential loops would otherwise multiply it);
- a bound on every range a template builds, because a range reaches filters and ``contains``
  without going through a loop (``(1..n) contains "a"`` scans it in C and never returns);
- a check before the filters whose output can multiply their input (``replace`` with an empty
  or frequent pattern, ``join`` with a long separator) and before arithmetic on integers past
  ``2**128`` (squaring a number in a loop doubles its size every time);
- a wall-clock deadline checked on every loop iteration. Liquid has no render timeout, so this
  one limit reads ``time.monotonic``; it is a backstop for work the counts cannot see (a slow
  filter over a large profile value), not the way ordinary templates are bounded.

A render that hits any of them raises :class:`~cjo.errors.RenderLimitError` naming the content
item, channel and field.

Rendering is strict: a variable the customer's data does not have fails the render (a
``RenderError``), unless the template gives it a ``default`` (``{{ profile.first_name |
default: "there" }}``) or only tests it (``{% if profile.vip %}``, where it is false). An unknown
filter fails too; besides Liquid's standard filters there is ``json``, which writes a value as
JSON (for webhook bodies). The math filters and ``date`` are cjo's strict versions
(:mod:`cjo.content.filters`): a value they cannot read (``"abc" | times: 2``, ``"soon" | date``)
fails the render rather than rendering ``0`` or the value unchanged. Blocks (``ContentBlock``)
are included by id with ``{% include %}`` (the block sees all the template sees) and
``{% render %}`` (it sees the render data and what is passed to it).

``'now' | date: ...`` (and ``'today'``) is the instant being decided, in UTC, which the engine
passes under ``NOW_KEY``, not the machine's wall clock: a back-test or a test on a manual
clock renders the instant it decides at.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable, Iterator, Mapping, Sized
from contextlib import contextmanager
from io import StringIO
from typing import Any, ClassVar, TextIO, cast

from liquid import BoundTemplate, DictLoader, Environment, RenderContext
from liquid.builtin.expressions.primitive import RangeLiteral
from liquid.builtin.output import Output, OutputNode
from liquid.builtin.tags.echo_tag import EchoNode, EchoTag
from liquid.exceptions import (
    FilterArgumentError,
    LiquidError,
    LoopIterationLimitError,
    ResourceLimitError,
)
from liquid.extra import JSON
from liquid.output import LimitedStringIO
from liquid.undefined import FalsyStrictUndefined

from cjo.content.filters import NOW_KEY, ZONE_KEY, output_text, register_strict_filters
from cjo.errors import RenderError, RenderLimitError
from cjo.limits import DEFAULT_LIMITS, Limits
from cjo.model.content import ContentItem, Variant

__all__ = ["NOW_KEY", "TEMPLATE_ROOTS", "ZONE_KEY", "Renderer", "field_error"]

#: The variables a template sees: the customer's attributes, the enrollment's context (also as
#: ``event``) and the customer id (``Decider.template_data``). Publishing refuses any other.
TEMPLATE_ROOTS: tuple[str, ...] = ("profile", "event", "context", "customer_id")

# Parsed templates kept per renderer. Keyed by source text, so a republished item with new
# fields never gets the old template; bounded, so republishing forever cannot grow it.
_CACHE_SIZE = 4_096


# Integers a filter may be given. Far past any price or count, and small enough that
# arithmetic on them is instant.
_FILTER_INT = 2**128


class _RenderTimeoutError(ResourceLimitError):
    """The render ran past ``Limits.render_timeout``."""


class _FilterLimitError(ResourceLimitError):
    """A filter call would produce too much, or compute on too large a number."""


def _limits_of(context: RenderContext) -> Limits:
    return cast(Limits, getattr(context.env, "cjo_limits", DEFAULT_LIMITS))


class _LimitedContext(RenderContext):
    """A render context that counts loop iterations over the whole render and keeps a deadline.

    One is created per render of one field, so the budget and the deadline are per field.
    """

    __slots__ = ("_deadline", "_iterations_left")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        limits = _limits_of(self)
        self._iterations_left = limits.max_loop_iterations
        timeout = limits.render_timeout
        self._deadline = None if timeout is None else time.monotonic() + timeout.total_seconds()

    def get_buffer(self, buf: TextIO | None = None) -> StringIO:
        used = buf.size if isinstance(buf, LimitedStringIO) else 0
        return _buffer(self.env.output_stream_limit, used)

    @contextmanager
    def loop(self, namespace: Mapping[str, object], forloop: Any) -> Iterator[RenderContext]:
        # Charged up front, as Liquid charges its own limit: a loop that would run too long is
        # refused before its first iteration.
        self._iterations_left -= forloop.length
        if self._iterations_left < 0:
            limit = _limits_of(self).max_loop_iterations
            raise LoopIterationLimitError(
                f"loop iteration limit reached: more than {limit} iterations in one render",
                token=None,
            )
        if self._deadline is not None and hasattr(forloop, "it"):
            forloop.it = self._ticking(forloop.it, self._deadline)
        with super().loop(namespace, forloop) as context:
            yield context

    def get_item(self, obj: Any, key: Any) -> Any:
        # On an object, ``size`` and ``first`` are its properties of that name. Liquid's
        # fallbacks (the number of keys, the first key and value) would put another attribute,
        # or a count, where a customer without a ``size`` or ``first`` attribute should fail.
        # ``| size`` still counts an object's keys; lists keep ``.size`` and ``.first``, and
        # text ``.size``.
        if key in ("size", "first") and isinstance(obj, Mapping):
            return obj[key]
        return super().get_item(obj, key)

    def filter(self, name: str, token: Any) -> Callable[..., object]:
        func = super().filter(name, token)
        limit = _limits_of(self).max_render_output

        def checked(*args: object, **kwargs: object) -> object:
            _check_filter_call(name, args, limit)
            try:
                return func(*args, **kwargs)
            except (TypeError, FilterArgumentError) as exc:
                # A call with too few or too many arguments says so in the template's words,
                # not in the Python function's ("_date() missing 1 required positional...");
                # Liquid's own filters raise the latter with the Python words.
                problem = _arguments_problem(name, func, args, kwargs)
                if problem is None:
                    raise
                raise FilterArgumentError(problem, token=None) from exc

        return checked

    def _ticking(self, items: Iterator[object], deadline: float) -> Iterator[object]:
        for item in items:
            if time.monotonic() > deadline:
                timeout = _limits_of(self).render_timeout
                raise _RenderTimeoutError(f"render time limit reached ({timeout})", token=None)
            yield item


def _arguments_problem(
    name: str, func: Callable[..., object], args: tuple[object, ...], kwargs: dict[str, object]
) -> str | None:
    """What is wrong with the arguments of a filter call, if its signature refuses them."""
    try:
        signature = inspect.signature(func)
        signature.bind(*args, **kwargs)
    except TypeError:
        pass
    except ValueError:  # no signature to read
        return None
    else:
        return None  # the arguments fit: the TypeError is the filter's own
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    # The first parameter is the value the filter is applied to, not one of its arguments.
    params = [p for p in signature.parameters.values() if p.kind in positional][1:]
    named = [p.name for p in params]
    required = sum(1 for p in params if p.default is inspect.Parameter.empty)
    many = any(p.kind is inspect.Parameter.VAR_POSITIONAL
               for p in signature.parameters.values())
    if many:
        takes = f"at least {required}"
    elif required == len(params):
        takes = str(required)
    else:
        takes = f"{required} to {len(params)}"
    listed = f" ({', '.join(named)})" if named else ""
    given = max(len(args) - 1, 0)
    return (f"filter {name!r} takes {takes} argument{'' if takes == '1' else 's'}{listed}, "
            f"given {given}")


def _text_length(value: object) -> int:
    return len(value) if isinstance(value, str) else 0


def _check_filter_call(name: str, args: tuple[object, ...], output_limit: int) -> None:
    """Refuse a filter call before it runs if its result would be over ``output_limit``
    characters, or if it is given an integer past ``_FILTER_INT``."""
    for arg in args:
        if type(arg) is int and not -_FILTER_INT <= arg <= _FILTER_INT:
            raise _FilterLimitError(
                f"{name}: integer of {arg.bit_length()} bits is too large for a template",
                token=None,
            )
    bound = 0
    if name == "replace" and len(args) >= 2 and isinstance(args[0], str):
        text, pattern = args[0], str(args[1])
        replacement = _text_length(args[2]) if len(args) > 2 else 0
        occurrences = text.count(pattern) if pattern else len(text) + 1
        bound = len(text) + occurrences * replacement
    elif name == "join" and args and isinstance(args[0], Sized):
        separator = args[1] if len(args) > 1 else " "
        bound = len(args[0]) * len(str(separator))
    if bound > output_limit:
        raise _FilterLimitError(
            f"{name}: the result would be about {bound} characters; the output limit is "
            f"{output_limit}",
            token=None,
        )


class _LimitedTemplate(BoundTemplate):
    context_class = _LimitedContext

    def _get_buffer(self) -> StringIO:
        return _buffer(self.env.output_stream_limit, 0)


def _buffer(limit: int | None, used: int) -> StringIO:
    # newline="": Liquid's own buffers translate newlines, which turns a "\r" in a value
    # into "\n"; output must be exactly what the template and the values say.
    if limit is None:
        return StringIO(newline="")
    return LimitedStringIO(limit=limit - used, newline="")


class _BoundedRange(RangeLiteral):
    """A range literal whose result is at most ``max_loop_iterations`` long."""

    __slots__ = ()

    def evaluate(self, context: RenderContext) -> range:
        result = super().evaluate(context)
        limit = _limits_of(context).max_loop_iterations
        if len(result) > limit:
            raise LoopIterationLimitError(
                f"range of {len(result)} items is longer than the limit of {limit}", token=None
            )
        return result

    async def evaluate_async(self, context: RenderContext) -> range:
        result = await super().evaluate_async(context)
        limit = _limits_of(context).max_loop_iterations
        if len(result) > limit:
            raise LoopIterationLimitError(
                f"range of {len(result)} items is longer than the limit of {limit}", token=None
            )
        return result


class _Undefined(FalsyStrictUndefined):
    """A missing variable: an error when output or used, false when tested, and replaced by
    the ``default`` filter."""

    force_liquid_default = True


def _write_output(node: OutputNode, context: RenderContext, buffer: TextIO) -> int:
    """An output node's value, written by ``output_text`` (an object fails rather than write
    Python's form of it)."""
    return buffer.write(output_text(node.expression.evaluate(context)))


class _OutputNode(OutputNode):
    """``{{ value }}``, written by ``_write_output``."""

    __slots__ = ()
    render_to_output = _write_output


class _Output(Output):
    node_class = _OutputNode


class _EchoNode(EchoNode):
    """``{% echo value %}``, written as ``{{ value }}`` is."""

    __slots__ = ()
    render_to_output = _write_output


class _Echo(EchoTag):
    node_class = _EchoNode


class _LimitedEnvironment(Environment):
    template_class = _LimitedTemplate
    cjo_limits: ClassVar[Limits] = DEFAULT_LIMITS


def _environment(limits: Limits, blocks: Mapping[str, str]) -> Environment:
    # Liquid reads its limits from class attributes, so each Limits gets its own subclass.
    cls = type("LimitedEnvironment", (_LimitedEnvironment,), {
        "cjo_limits": limits,
        "loop_iteration_limit": limits.max_loop_iterations,
        "output_stream_limit": limits.max_render_output,
        "local_namespace_limit": limits.max_template_variables,
    })
    env = cast(Environment, cls(
        loader=DictLoader(dict(blocks)), undefined=_Undefined, strict_filters=True,
    ))
    # ``json`` writes a value as JSON (strings quoted and escaped): what webhook bodies need.
    env.add_filter("json", JSON(default=str))
    # Math filters and ``date`` that fail on a value they cannot read, rather than render 0 or
    # the value unchanged.
    register_strict_filters(env)
    env.add_tag(_Output)
    env.add_tag(_Echo)
    return env


def _bound_ranges(template: BoundTemplate) -> None:
    """Make every range literal in ``template`` a :class:`_BoundedRange`.

    Liquid builds ranges in its parser with no hook to substitute the class, so the parsed
    tree is walked once (iteratively) and each range node re-classed; ``_BoundedRange`` adds no
    state, so the re-classed node is otherwise the same object.
    """
    static_context = RenderContext(template)
    nodes: list[Any] = list(template.nodes)
    while nodes:
        node = nodes.pop()
        expressions: list[Any] = list(node.expressions())
        while expressions:
            expression = expressions.pop()
            if type(expression) is RangeLiteral:
                expression.__class__ = _BoundedRange
            expressions.extend(expression.children())
        nodes.extend(node.children(static_context, include_partials=False))


def _message(exc: BaseException) -> str:
    # str(LiquidError) carries a multi-line source excerpt; the bare message fits on one line.
    message = getattr(exc, "message", None) if isinstance(exc, LiquidError) else None
    return str(message or exc).splitlines()[0] if str(message or exc) else type(exc).__name__


class Renderer:
    """Parses each template once and renders it many times, within ``limits``; ``blocks``
    (block id to source) are what templates may include."""

    def __init__(
        self, limits: Limits = DEFAULT_LIMITS, blocks: Mapping[str, str] | None = None
    ) -> None:
        self.limits = limits
        self.blocks: Mapping[str, str] = dict(blocks or {})
        self._env = _environment(limits, self.blocks)
        self._template = functools.lru_cache(maxsize=_CACHE_SIZE)(self._parse)

    @property
    def environment(self) -> Environment:
        """The Liquid environment templates are parsed in (its loader reads the blocks)."""
        return self._env

    def _parse(self, source: str) -> BoundTemplate | str:
        if "{{" not in source and "{%" not in source:
            return source  # plain text needs no template engine: keep the string itself
        template = self._env.from_string(source)
        _bound_ranges(template)
        return template

    def render(
        self,
        item: ContentItem,
        variant: Variant,
        data: Mapping[str, Any],
    ) -> dict[str, str]:
        """Every field of ``variant`` rendered with ``data``.

        Raises ``RenderLimitError`` if a field hits a template limit and ``RenderError`` if it
        fails otherwise; either names the content item, channel and field.
        """
        return {
            name: self._render_field(item, variant, name, source, data)
            for name, source in variant.fields.items()
        }

    def render_field(
        self, item: ContentItem, variant: Variant, name: str, data: Mapping[str, Any]
    ) -> str:
        """One field of ``variant`` rendered with ``data``; errors as :meth:`render`'s."""
        return self._render_field(item, variant, name, variant.fields[name], data)

    def check(
        self, item: ContentItem, variant: Variant, sample_data: Mapping[str, Any]
    ) -> None:
        """Render every field of ``variant`` against ``sample_data``, for publish time, and raise
        the first of :meth:`problems`."""
        for error in self.problems(item, variant, sample_data):
            raise error

    def problems(
        self, item: ContentItem, variant: Variant, sample_data: Mapping[str, Any]
    ) -> list[RenderError]:
        """What is wrong with the fields of ``variant``, found by rendering them against
        ``sample_data``: one error per failing field (``RenderLimitError`` for a field that is
        too long or hits a template limit, ``RenderError`` for anything else: a template that
        does not parse, an unknown filter, a variable the sample does not have)."""
        errors: list[RenderError] = []
        for name, source in variant.fields.items():
            try:
                self._render_field(item, variant, name, source, sample_data)
            except RenderError as exc:
                errors.append(exc)
        return errors

    def _render_field(
        self,
        item: ContentItem,
        variant: Variant,
        name: str,
        source: str,
        data: Mapping[str, Any],
    ) -> str:
        return self._run(item, variant, name, self._compile(item, variant, name, source), data)

    def _compile(
        self, item: ContentItem, variant: Variant, name: str, source: str
    ) -> BoundTemplate | str:
        if len(source) > self.limits.max_template_length:
            raise field_error(RenderLimitError, item, variant, name,
                         f"the template is {len(source)} characters long; the limit is "
                         f"{self.limits.max_template_length}")
        try:
            return self._template(source)
        except LiquidError as exc:
            raise field_error(RenderError, item, variant, name, _message(exc)) from exc

    def _run(
        self,
        item: ContentItem,
        variant: Variant,
        name: str,
        template: BoundTemplate | str,
        data: Mapping[str, Any],
    ) -> str:
        if isinstance(template, str):
            return template
        try:
            return template.render(**data)
        except ResourceLimitError as exc:
            raise field_error(RenderLimitError, item, variant, name, _message(exc)) from exc
        except LiquidError as exc:
            raise field_error(RenderError, item, variant, name, _message(exc)) from exc
        except Exception as exc:  # a template is user input: whatever it raises fails one field
            reason = f"{type(exc).__name__}: {_message(exc)}"
            raise field_error(RenderError, item, variant, name, reason) from exc


def field_error(
    cls: type[RenderError], item: ContentItem, variant: Variant, name: str, reason: str
) -> RenderError:
    """``cls`` for field ``name`` of ``variant``, named by item, channel, locale and A/B name."""
    return cls(f"{_where(item, variant, name)}: {reason}", field=name, reason=reason)


def _where(item: ContentItem, variant: Variant, name: str) -> str:
    locale = f" ({variant.locale})" if variant.locale else ""
    ab = f" [{variant.name}]" if variant.name is not None else ""
    return f"content {item.id!r} / {variant.channel}{locale}{ab} / field {name!r}"
