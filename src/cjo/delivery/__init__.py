"""Delivery policies, applied by the decision core right before each send: consent
(``consent``), frequency caps (``caps``), quiet hours (``quiet_hours``), fallback channels and
the order they are checked in (``gate``), and the events that change consent or report on
delivery (``feedback``). See docs/delivery-policies.md."""

from cjo.delivery.consent import ANY
from cjo.delivery.feedback import CONSENT_EVENTS, DELIVERY_EVENTS, FEEDBACK_EVENTS
from cjo.delivery.gate import NO_POLICIES, DeliveryPolicies
from cjo.runtime.options import STANDARD_CONTACT_ATTRIBUTES

__all__ = [
    "ANY",
    "CONSENT_EVENTS",
    "DELIVERY_EVENTS",
    "FEEDBACK_EVENTS",
    "NO_POLICIES",
    "STANDARD_CONTACT_ATTRIBUTES",
    "DeliveryPolicies",
]
