"""What the node tells its operator: throttled warnings, counters, rates, the diagnostics summary.

:class:`NodeHealth` sees every received message and every :class:`ScanOutcome`. It returns the
warning lines to log (one per problem kind every ``warn_period`` seconds, saying how many were held
back, so a bad stream cannot flood the log) and builds the ``/diagnostics`` status: latency, input
and output rates, drops, provider, window fill. ``node.py`` only copies these into rclpy's logger
and diagnostic_updater's status, so the rules are tested without ROS.

All times are monotonic wall seconds (rates and latency are about the machine, not the data).
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import dataclass

import numpy as np

from kdmos_ros.ros.processing import LABELLED, REJECTED, STALE, SUPERSEDED, ScanOutcome

# diagnostic_msgs/DiagnosticStatus levels.
OK = 0
WARN = 1
ERROR = 2


class WarningThrottle:
    """Lets one message per key through every ``period`` seconds and counts the ones held back."""

    def __init__(self, period: float = 5.0) -> None:
        self.period = period
        self._last: dict[str, float] = {}
        self._held: Counter[str] = Counter()

    def filter(self, key: str, message: str, now: float) -> str | None:
        """The line to log for this occurrence, or None when it is held back."""
        last = self._last.get(key)
        if last is not None and now - last < self.period:
            self._held[key] += 1
            return None
        self._last[key] = now
        held = self._held.pop(key, 0)
        if held and last is not None:
            return f"{message} (+{held} more like this in the last {now - last:.0f} s)"
        return message


class RateMeter:
    """Events per second over the last ``horizon`` seconds."""

    def __init__(self, horizon: float = 5.0) -> None:
        self.horizon = horizon
        self._times: deque[float] = deque()
        self._first: float | None = None
        self._last: float | None = None

    def tick(self, now: float) -> None:
        if self._first is None:
            self._first = now
        self._last = now
        self._times.append(now)
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._times and self._times[0] <= now - self.horizon:
            self._times.popleft()

    def count(self, now: float) -> int:
        self._trim(now)
        return len(self._times)

    def rate(self, now: float) -> float:
        if self._first is None or now <= self._first:
            return 0.0
        # Before a full horizon has passed, divide by the time actually observed.
        return self.count(now) / min(self.horizon, now - self._first)

    @property
    def last(self) -> float | None:
        """Time of the latest event ever (None before the first)."""
        return self._last


@dataclass(frozen=True)
class HealthSummary:
    """One diagnostic status: level (OK/WARN/ERROR), a one-line message and key/value pairs."""

    level: int
    message: str
    values: list[tuple[str, str]]


class NodeHealth:
    """Counters and recent history of one node; safe to call from the callback and worker threads."""

    def __init__(
        self,
        topic: str,
        pose_source: str,
        provider: str,
        model: str,
        expected_rate: float,
        horizon: float = 5.0,
        warn_period: float = 5.0,
        realtime_scans: int = 50,
    ) -> None:
        self.topic = topic
        self.pose_source = pose_source
        self.provider = provider
        self.model = model
        self.expected_rate = expected_rate
        self.horizon = horizon
        self._lock = threading.Lock()
        self._throttle = WarningThrottle(warn_period)
        self._input = RateMeter(horizon)
        self._output = RateMeter(horizon)
        self._posed = RateMeter(horizon)  # scans labelled with a pose
        self._drops = RateMeter(horizon)
        self._problems: deque[tuple[float, str]] = deque()
        self.counts: Counter[str] = Counter()
        self._latency: deque[float] = deque(maxlen=200)
        # The real-time check looks at the last ``realtime_scans`` latencies only, so it reacts to a
        # machine that became busy and clears once the node keeps up again.
        self.realtime_scans = realtime_scans
        self._recent_latency: deque[float] = deque(maxlen=realtime_scans)
        self._behind_logged = False
        self._processing: deque[float] = deque(maxlen=200)
        self._window_fill: tuple[int, int] | None = None
        self._mounting = "n/a"
        self._started: float | None = None

    def start(self, now: float) -> None:
        with self._lock:
            self._started = now

    def received(self, now: float, replaced: bool) -> None:
        """A message arrived; ``replaced``: it pushed out a scan that was never processed."""
        with self._lock:
            self.counts["received"] += 1
            self._input.tick(now)
            if replaced:
                self.counts["dropped_superseded"] += 1
                self._drops.tick(now)

    def observe(self, outcome: ScanOutcome, now: float) -> list[str]:
        """Record what became of a scan; returns the warning lines to log now."""
        lines = []
        with self._lock:
            if outcome.status == LABELLED:
                self.counts["labelled"] += 1
                self._output.tick(now)
                self._latency.append(outcome.latency)
                self._recent_latency.append(outcome.latency)
                line = self._realtime_line()
                if line is not None:
                    lines.append(line)
                if outcome.has_pose:
                    self._posed.tick(now)
                else:
                    self.counts["labelled_without_pose"] += 1
            elif outcome.status == STALE:
                self.counts["dropped_stale"] += 1
                self._drops.tick(now)
            elif outcome.status == SUPERSEDED:
                self.counts["dropped_superseded"] += 1
                self._drops.tick(now)
            elif outcome.status == REJECTED:
                self.counts["rejected"] += 1
            if outcome.result is not None:
                self._processing.append(sum(outcome.result.timings.values()))
                self._window_fill = outcome.result.window_fill
                self._mounting = outcome.mounting
            for problem in outcome.problems:
                self.counts[f"problem.{problem.key}"] += 1
                if problem.key == "window_reset":
                    self.counts["window_resets"] += 1
                self._problems.append((now, problem.message))
                line = self._throttle.filter(problem.key, problem.message, now)
                if line is not None:
                    lines.append(line)
            self._trim(now)
        return lines

    def _behind(self) -> float | None:
        """p95 latency (s) of the last ``realtime_scans`` scans when it exceeds the scan period."""
        if len(self._recent_latency) < self.realtime_scans or self.expected_rate <= 0:
            return None
        p95 = float(np.percentile(np.array(self._recent_latency), 95))
        return p95 if p95 > 1.0 / self.expected_rate else None

    def _realtime_message(self, p95: float) -> str:
        return (
            f"not real time: latency p95 {p95 * 1000:.1f} ms over the last {self.realtime_scans} scans "
            f"exceeds the {1000 / self.expected_rate:.0f} ms scan period at {self.expected_rate:g} Hz; "
            "scans will be dropped (on a CPU try model_path:=lite_int8 or model_path:=nano, "
            "or a GPU provider; README, kdmos bench)"
        )

    def _realtime_line(self) -> str | None:
        """The line to log when the node falls behind: once, and again only after it has caught up."""
        p95 = self._behind()
        if p95 is None:
            if len(self._recent_latency) >= self.realtime_scans:
                self._behind_logged = False
            return None
        if self._behind_logged:
            return None
        self._behind_logged = True
        return self._realtime_message(p95)

    def report(self, key: str, message: str, now: float) -> list[str]:
        """A problem outside a scan (a bad odometry message, a bug while processing); lines to log."""
        with self._lock:
            self.counts[f"problem.{key}"] += 1
            self._problems.append((now, message))
            line = self._throttle.filter(key, message, now)
        return [line] if line is not None else []

    def _trim(self, now: float) -> None:
        while self._problems and self._problems[0][0] <= now - self.horizon:
            self._problems.popleft()

    def summary(self, now: float, moving_threshold: float) -> HealthSummary:
        """The status to publish on /diagnostics."""
        with self._lock:
            self._trim(now)
            input_rate = self._input.rate(now)
            output_rate = self._output.rate(now)
            latency = np.array(self._latency) * 1000.0
            processing = np.array(self._processing) * 1000.0
            received_recently = self._input.count(now)
            posed_recently = self._posed.count(now)
            drops_recently = self._drops.count(now)
            problems = list(self._problems)
            last_input = self._input.last
            counts = dict(self.counts)
            fill = self._window_fill
            mounting = self._mounting
            observed = now - self._started if self._started is not None else 0.0
            behind = self._behind()

        def ms(values: np.ndarray, q: float) -> str:
            return f"{np.percentile(values, q):.1f}" if values.size else "n/a"

        values = [
            ("topic", self.topic),
            ("input_rate_hz", f"{input_rate:.2f}"),
            ("output_rate_hz", f"{output_rate:.2f}"),
            ("expected_rate_hz", f"{self.expected_rate:g}"),
            ("latency_median_ms", ms(latency, 50)),
            ("latency_p95_ms", ms(latency, 95)),
            ("processing_median_ms", ms(processing, 50)),
            ("scans_received", str(counts.get("received", 0))),
            ("scans_labelled", str(counts.get("labelled", 0))),
            ("labelled_without_pose", str(counts.get("labelled_without_pose", 0))),
            ("dropped_stale", str(counts.get("dropped_stale", 0))),
            ("dropped_superseded", str(counts.get("dropped_superseded", 0))),
            ("rejected", str(counts.get("rejected", 0))),
            ("window_resets", str(counts.get("window_resets", 0))),
            ("window_fill", f"{fill[0]}/{fill[1]}" if fill else "n/a"),
            ("pose_source", self.pose_source),
            ("mounting", mounting),
            ("provider", self.provider),
            ("model", self.model),
            ("moving_threshold", f"{moving_threshold:g}"),
            ("last_problem", problems[-1][1] if problems else ""),
        ]
        silence = max(1.0, 3.0 / self.expected_rate)
        if last_input is None:
            return HealthSummary(WARN, f"waiting for clouds on {self.topic}", values)
        if now - last_input > silence:
            return HealthSummary(WARN, f"no cloud on {self.topic} for {now - last_input:.1f} s", values)
        if received_recently and posed_recently == 0 and problems and observed >= self.horizon:
            return HealthSummary(ERROR, f"receiving clouds but labelling none: {problems[-1][1]}", values)
        if problems:
            latest = problems[-1][1]
            return HealthSummary(
                WARN, f"{len(problems)} problem(s) in the last {self.horizon:g} s, latest: {latest}", values
            )
        if behind is not None:
            return HealthSummary(WARN, self._realtime_message(behind), values)
        if received_recently and drops_recently > 0.2 * received_recently:
            return HealthSummary(
                WARN,
                f"dropped {drops_recently} of {received_recently} scans in the last {self.horizon:g} s "
                "(labelling is slower than the input)",
                values,
            )
        rate_ok = 0.7 * self.expected_rate <= input_rate <= 1.5 * self.expected_rate
        if observed >= self.horizon and not rate_ok:
            return HealthSummary(
                WARN,
                f"clouds arrive at {input_rate:.1f} Hz but scan_rate is {self.expected_rate:g} Hz: "
                "set scan_rate to the sensor's spin rate",
                values,
            )
        return HealthSummary(OK, f"labelling at {output_rate:.1f} Hz", values)
