"""cjo: customer journey orchestration inside your own Python application."""

from cjo.channels.base import Channel, DeliveryResult, Message
from cjo.channels.console import ConsoleChannel
from cjo.channels.recording import RecordingChannel
from cjo.clock import Clock, ManualClock, SystemClock
from cjo.conditions import Condition, attr, ctx, in_segment, prop
from cjo.engine import Engine
from cjo.errors import (
    ChannelError,
    CjoError,
    ClockError,
    ConflictError,
    CorruptRecordError,
    DefinitionError,
    InvalidEventError,
    Problem,
    RenderError,
    RenderLimitError,
    SchemaError,
    StorageError,
    UnknownJourneyError,
    UsageError,
)
from cjo.limits import Limits
from cjo.model.content import ContentItem, Variant
from cjo.model.definitions import Definitions
from cjo.model.events import Event, Profile, ProfileUpdate
from cjo.model.journey import ExitCriterion, Goal, Journey, ReentryPolicy
from cjo.model.policies import FrequencyCap, QuietHours, Topic
from cjo.model.segments import Segment
from cjo.model.steps import (
    Branch,
    Case,
    Exit,
    Send,
    Split,
    SplitPath,
    Step,
    UpdateProfile,
    Wait,
    WaitForEvent,
)
from cjo.model.taxonomy import Category, Taxonomy
from cjo.model.triggers import ApiTrigger, EventTrigger, InactivityTrigger, Trigger
from cjo.outcome import Ended, Entered, GoalReached, Outcome, StepRun
from cjo.runtime.state import Activity, CustomerState, Enrollment
from cjo.serialization import (
    dump_definitions,
    dumps_definitions,
    load_definitions,
    loads_definitions,
)
from cjo.simulate import BacktestResult, backtest
from cjo.storage.base import Retention, Storage
from cjo.storage.memory import InMemoryStorage
from cjo.storage.sqlite import SQLiteStorage
from cjo.validation import validate_definitions
from cjo.worker import WorkerStats, run_worker

__version__ = "0.1.0"

__all__ = [
    "Activity",
    "ApiTrigger",
    "BacktestResult",
    "Branch",
    "Case",
    "Category",
    "Channel",
    "ChannelError",
    "CjoError",
    "Clock",
    "ClockError",
    "Condition",
    "ConflictError",
    "ConsoleChannel",
    "ContentItem",
    "CorruptRecordError",
    "CustomerState",
    "DefinitionError",
    "Definitions",
    "DeliveryResult",
    "Ended",
    "Engine",
    "Enrollment",
    "Entered",
    "Event",
    "EventTrigger",
    "Exit",
    "ExitCriterion",
    "FrequencyCap",
    "Goal",
    "GoalReached",
    "InMemoryStorage",
    "InactivityTrigger",
    "InvalidEventError",
    "Journey",
    "Limits",
    "ManualClock",
    "Message",
    "Outcome",
    "Problem",
    "Profile",
    "ProfileUpdate",
    "QuietHours",
    "RecordingChannel",
    "ReentryPolicy",
    "RenderError",
    "RenderLimitError",
    "Retention",
    "SQLiteStorage",
    "SchemaError",
    "Segment",
    "Send",
    "Split",
    "SplitPath",
    "Step",
    "StepRun",
    "Storage",
    "StorageError",
    "SystemClock",
    "Taxonomy",
    "Topic",
    "Trigger",
    "UnknownJourneyError",
    "UpdateProfile",
    "UsageError",
    "Variant",
    "Wait",
    "WaitForEvent",
    "WorkerStats",
    "attr",
    "backtest",
    "ctx",
    "dump_definitions",
    "dumps_definitions",
    "in_segment",
    "load_definitions",
    "loads_definitions",
    "prop",
    "run_worker",
    "validate_definitions",
]
