"""cjo: customer journey orchestration inside your own Python application."""

from cjo.channels.base import Channel, DeliveryResult, Message
from cjo.channels.console import ConsoleChannel
from cjo.channels.recording import RecordingChannel
from cjo.clock import Clock, ManualClock, SystemClock
from cjo.conditions import Condition, attr, ctx, entered_at, in_segment, now, prop
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
from cjo.model.content import ContentBlock, ContentItem, ContentSample, Variant
from cjo.model.definitions import Definitions
from cjo.model.events import Event, Profile, ProfileUpdate
from cjo.model.governance import ControlGroup, JourneyPause, ResumeRule, VersionChange
from cjo.model.journey import ExitCriterion, Goal, Journey, ReentryPolicy
from cjo.model.offers import Offer, OfferCap
from cjo.model.segments import Segment
from cjo.model.steps import (
    AudiencePath,
    AudiencePaths,
    Branch,
    Case,
    Exit,
    Jump,
    Send,
    Split,
    SplitPath,
    Step,
    UpdateProfile,
    Wait,
    WaitForEvent,
    WaitSinceEntry,
    WaitUntil,
    WaitUntilDate,
)
from cjo.model.taxonomy import Category, Taxonomy
from cjo.model.triggers import (
    ApiTrigger,
    AttributeTrigger,
    EventTrigger,
    InactivityTrigger,
    Trigger,
)
from cjo.outcome import Ended, Entered, GoalReached, NotEntered, Outcome, SendFailure, StepRun
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
    "AttributeTrigger",
    "AudiencePath",
    "AudiencePaths",
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
    "ContentBlock",
    "ContentItem",
    "ContentSample",
    "ControlGroup",
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
    "Goal",
    "GoalReached",
    "InMemoryStorage",
    "InactivityTrigger",
    "InvalidEventError",
    "Journey",
    "JourneyPause",
    "Jump",
    "Limits",
    "ManualClock",
    "Message",
    "NotEntered",
    "Offer",
    "OfferCap",
    "Outcome",
    "Problem",
    "Profile",
    "ProfileUpdate",
    "RecordingChannel",
    "ReentryPolicy",
    "RenderError",
    "RenderLimitError",
    "ResumeRule",
    "Retention",
    "SQLiteStorage",
    "SchemaError",
    "Segment",
    "Send",
    "SendFailure",
    "Split",
    "SplitPath",
    "Step",
    "StepRun",
    "Storage",
    "StorageError",
    "SystemClock",
    "Taxonomy",
    "Trigger",
    "UnknownJourneyError",
    "UpdateProfile",
    "UsageError",
    "Variant",
    "VersionChange",
    "Wait",
    "WaitForEvent",
    "WaitSinceEntry",
    "WaitUntil",
    "WaitUntilDate",
    "WorkerStats",
    "attr",
    "backtest",
    "ctx",
    "dump_definitions",
    "dumps_definitions",
    "entered_at",
    "in_segment",
    "load_definitions",
    "loads_definitions",
    "now",
    "prop",
    "run_worker",
    "validate_definitions",
]
