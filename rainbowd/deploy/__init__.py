"""Rainbow deploys, performed: a color's Deployment created and waited on until it has rolled
out, an optional smoke check, then the Service switched under a resourceVersion precondition;
rollback, canary promotion, holds, and the history of an app's colors. The CLI and the sandbox
share it.

One module per command (`deploying`, `rollback`, `promote`, `hold`, `history`) over `waiting`,
`templates` and `common`. Every decision reads core's `Deployment` and `Service`: a color is live
when the planner would say so (`Service.selects`), and rolled out per `Deployment.rolled_out`,
which builds on the planner's `Deployment.available`.
"""

from rainbowd.deploy.common import (
    CANARY_COLOR,
    PREVIOUS_COLOR,
    AppRef,
    DeployError,
    ServiceSwitch,
    UsageError,
    live_colors,
    validate_color,
)
from rainbowd.deploy.deploying import DeployRequest, deploy, git_color
from rainbowd.deploy.history import ColorHistory, history, render_history
from rainbowd.deploy.hold import find_color, hold, release
from rainbowd.deploy.promote import promote
from rainbowd.deploy.rollback import rollback
from rainbowd.deploy.templates import (
    COLOR_PLACEHOLDER,
    clone_deployment,
    render_template,
    substitute_color,
)
from rainbowd.deploy.waiting import ReadyColor, command_check, is_available, wait_available

__all__ = [
    "CANARY_COLOR",
    "COLOR_PLACEHOLDER",
    "PREVIOUS_COLOR",
    "AppRef",
    "ColorHistory",
    "DeployError",
    "DeployRequest",
    "ReadyColor",
    "ServiceSwitch",
    "UsageError",
    "clone_deployment",
    "command_check",
    "deploy",
    "find_color",
    "git_color",
    "history",
    "hold",
    "is_available",
    "live_colors",
    "promote",
    "release",
    "render_history",
    "render_template",
    "rollback",
    "substitute_color",
    "validate_color",
    "wait_available",
]
