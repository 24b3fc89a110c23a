"""Traffic: the ego vehicle, cars, trucks, cyclists and pedestrians moving through the street grid.

Every agent follows a :class:`~kdmos_ros.sim.routes.Path` and the simulation advances all of them
together in fixed time steps (two per LiDAR scan). An agent's speed tracks the lowest of:

- its cruising speed;
- a braking envelope for the curves ahead (lateral acceleration ≤ 2.5 m/s²);
- the traffic light at its next stop: junctions cycle green / all-red for the two road axes; a
  vehicle that could not stop comfortably when its light turns red drives on, pedestrians only start
  crossing while the green lasts for most of the crosswalk;
- car following (vehicles only): keep a gap of 2.5 m plus one second to whatever is on the path
  ahead: a vehicle in the lane, a crossing pedestrian, a car still clearing the junction;
- before a left turn, wait while oncoming traffic would arrive within 4 s;
- pedestrians stop for a vehicle in their way.

This yields the behaviours a moving-object network must learn from: cars waiting at red lights and
driving off (stop-and-go), queues, turning traffic, pedestrians waiting and crossing, people standing.
New agents appear out of view (beyond 70 m for vehicles, 35 m for pedestrians) to keep the traffic
density around the ego constant, and disappear far from it or at the end of their path.

The first junction is staged: the ego approaches it while its light is red with a queue of cars
waiting in its lane and in the oncoming one and pedestrians waiting to cross; the light turns green
within the first three seconds. So every sequence starts with waiting objects that drive or walk
off, seen from a moving ego.

Accelerations follow observed urban driving (about 1.5-2.5 m/s² accelerating, 2-3 m/s² braking; e.g.
Bokare & Maurya, Transportation Research Procedia 2017), walking speeds 1.0-1.6 m/s (Knoblauch et
al., Transportation Research Record 1996).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from kdmos_ros.sim.classes import MOVING_THRESHOLD_MPS
from kdmos_ros.sim.layout import HEADINGS, StreetLayout, right_of
from kdmos_ros.sim.raycast import Primitives
from kdmos_ros.sim.routes import LEFT_TURN_RADIUS, Path, pedestrian_path, vehicle_path
from kdmos_ros.sim.shapes import Row, VehicleShape, cyclist_rows, person_rows, random_vehicle, vehicle_rows

__all__ = ["Agent", "AgentState", "Traffic", "TrafficLights"]

EGO, CAR, CYCLIST, PEDESTRIAN = "ego", "car", "cyclist", "pedestrian"

_LIGHT_STREAM = 21
_EGO_STREAM = 22
_INDEX_OFFSET = 1 << 20
_LATERAL_ACCELERATION = 2.5  # m/s², comfortable cornering
_HARD_BRAKING = 6.0  # m/s², the most any agent brakes
_STANDSTILL_GAP = 2.5  # m between stopped cars
_HEADWAY = 1.0  # s of gap per m/s of speed
_MAX_AGENTS = 10000  # agent instance ids are 0 (the ego) to 9999; static objects use 10000 and up
_SPAWN_INTERVAL = 0.5  # s between spawn checks
_DESPAWN_DISTANCE = 170.0  # m from the ego
_LOOKAHEAD = 60.0  # m of path a vehicle checks for road users ahead
_WALK_LOOKAHEAD = 8.0  # m of path a pedestrian checks for vehicles ahead
_WALKING_GAP = 0.8  # m a pedestrian keeps to a vehicle in the way


@dataclass
class TrafficLights:
    """Fixed-time signals: axis 0 green, all red, axis 1 green, all red; each junction with its offset."""

    seed: int
    green: float
    all_red: float = 2.0
    fixed: dict[tuple[int, int], float] = field(default_factory=dict)

    @property
    def cycle(self) -> float:
        return 2.0 * (self.green + self.all_red)

    def offset(self, node: tuple[int, int]) -> float:
        if node not in self.fixed:
            rng = np.random.default_rng(
                [self.seed, _LIGHT_STREAM, node[0] + _INDEX_OFFSET, node[1] + _INDEX_OFFSET]
            )
            self.fixed[node] = float(rng.uniform(0.0, self.cycle))
        return self.fixed[node]

    def remaining_green(self, node: tuple[int, int], axis: int, t: float) -> float:
        """Seconds of green left for travel along ``axis`` through ``node`` at time ``t`` (0 if red)."""
        phase = (t + self.offset(node)) % self.cycle
        start = 0.0 if axis == 0 else self.green + self.all_red
        return max(start + self.green - phase, 0.0) if phase >= start else 0.0


@dataclass(frozen=True)
class AgentState:
    x: float
    y: float
    yaw: float
    speed: float
    s: float


@dataclass
class Agent:
    """One road user; ``s`` and ``v`` hold its arc length and speed at every step it was active."""

    kind: str
    instance: int
    path: Path
    v_max: float
    accel: float
    decel: float
    length: float
    width: float
    shade: float
    start_step: int
    shape: VehicleShape | None = None
    height: float = 0.0
    s: list[float] = field(default_factory=list)
    v: list[float] = field(default_factory=list)
    active: bool = True
    next_stop: int = 0
    envelope: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __post_init__(self) -> None:
        self.set_path(self.path)

    def set_path(self, path: Path) -> None:
        """Use ``path`` and precompute the speed envelope of its curves."""
        self.path = path
        ds = path.ds
        with np.errstate(divide="ignore"):
            limit = np.minimum(self.v_max, np.sqrt(_LATERAL_ACCELERATION / path.curvature))
        # v(s)² ≤ min over s' ≥ s of (limit(s')² + 2·decel·(s' - s)): a reverse running minimum.
        position = np.arange(len(limit)) * ds
        reach = limit**2 + 2.0 * self.decel * position
        self.envelope = np.sqrt(
            np.maximum(np.minimum.accumulate(reach[::-1])[::-1] - 2.0 * self.decel * position, 0.0)
        )

    def state(self, step: int) -> AgentState | None:
        """Pose and speed at a simulation step, or None when the agent does not exist then."""
        k = step - self.start_step
        if k < 0 or k >= len(self.s):
            return None
        x, y, yaw = self.path.pose(self.s[k])
        return AgentState(x, y, yaw, self.v[k], self.s[k])

    @property
    def stop_margin(self) -> float:
        """How far before a stop point the agent's centre halts (its front at the line)."""
        return self.length / 2 if self.kind != PEDESTRIAN else 0.3

    def rows(self, state: AgentState) -> list[Row]:
        if self.kind == PEDESTRIAN:
            # Legs swing with a 1.4 m stride cycle, more widely the faster the person walks.
            stride = 0.55 * min(state.speed / 1.4, 1.0) * math.sin(2.0 * math.pi * state.s / 1.4)
            return person_rows(state.x, state.y, state.yaw, self.height, self.instance, self.shade, stride)
        if self.kind == CYCLIST:
            return cyclist_rows(state.x, state.y, state.yaw, self.instance, self.shade)
        assert self.shape is not None
        return vehicle_rows(self.shape, state.x, state.y, state.yaw, self.instance, self.shade)


class Traffic:
    """All agents of one sequence, simulated step by step from a seed.

    ``rng`` drives spawning and agent parameters; the ego's route and the light offsets have their
    own streams, so they do not change when the spawning does. ``density`` scales the number of
    vehicles, cyclists and pedestrians kept around the ego (1: the drawn numbers).
    """

    def __init__(
        self, layout: StreetLayout, seed: int, rng: np.random.Generator, dt: float, density: float = 1.0
    ) -> None:
        if density < 0:
            raise ValueError(f"traffic density must be >= 0, got {density}")
        self.layout = layout
        self.seed = seed
        self.rng = rng
        self.dt = dt
        self.steps = 0  # the latest simulated step; every active agent has a state there
        self.agents: list[Agent] = []
        self.target_vehicles = round(int(rng.integers(6, 17)) * density)
        self.target_cyclists = round(int(rng.integers(0, 4)) * density)
        self.target_pedestrians = round(int(rng.integers(6, 19)) * density)
        self.lights = TrafficLights(seed, green=float(rng.uniform(12.0, 20.0)))
        self._ego_junctions = 6
        self._stage_first_junction()
        self._populate()

    # ---- set-up --------------------------------------------------------------------------------

    def _ego_path(self, lane_offset: float, before: float) -> Path:
        # A fresh generator of the ego stream each time: a longer route repeats the shorter one's turns.
        rng = np.random.default_rng([self.seed, _EGO_STREAM])
        return vehicle_path(self.layout, rng, (0, 0), 0, lane_offset, before, self._ego_junctions)

    def _stage_first_junction(self) -> None:
        layout, rng = self.layout, self.rng
        lane = int(rng.integers(0, layout.lanes))
        offset = layout.lane_offset(lane)
        self._ego_before = layout.stop_distance + float(rng.uniform(40.0, 65.0))
        self._ego_offset = offset
        ego = Agent(
            EGO,
            0,
            self._ego_path(offset, self._ego_before),
            v_max=float(rng.uniform(9.0, 13.9)),
            accel=float(rng.uniform(1.5, 2.5)),
            decel=2.5,
            length=4.5,
            width=1.8,
            shade=0.0,
            start_step=0,
        )
        self._add(ego, float(rng.uniform(6.0, 9.0)))
        # The ego's light turns green between 1.5 and 3 s in.
        green_at = float(rng.uniform(1.5, 3.0))
        self.lights.fixed[(0, 0)] = (-green_at) % self.lights.cycle
        for heading, count in ((0, int(rng.integers(1, 4))), (2, int(rng.integers(0, 4)))):
            before = layout.stop_distance
            lane_offset = offset if heading == 0 else layout.lane_offset(int(rng.integers(0, layout.lanes)))
            node = (0, 0)
            for _ in range(count):
                shape = random_vehicle(rng, allow_large=False)
                before += shape.length / 2
                path = vehicle_path(layout, rng, node, heading, lane_offset, before, 4)
                self._add_vehicle(shape, path, 0.0)
                before += shape.length / 2 + _STANDSTILL_GAP
        # Pedestrians walking up to the crosswalks over the crossing road, to cross with the ego's green.
        q_range = (layout.half_road + 0.8, layout.half_road + layout.sidewalk_width - 0.8)
        for _ in range(int(rng.integers(1, 4))):
            my = int(rng.integers(0, 2))
            west = rng.random() < 0.5
            corner, heading = ((-1, my), 0) if west else ((2, my), 2)
            self._add_pedestrian(
                corner, heading, float(rng.uniform(*q_range)), float(rng.uniform(0.85, 0.97)), first_turn=0
            )

    # ---- agents ----------------------------------------------------------------------------------

    def _add(self, agent: Agent, speed: float) -> Agent:
        # Stops already behind the agent do not apply (one right at its front still does).
        while (
            agent.next_stop < len(agent.path.stops)
            and agent.path.stops[agent.next_stop].s - agent.stop_margin < -0.05
        ):
            agent.next_stop += 1
        agent.s.append(0.0)
        # Never appear too fast to stop at a red light just ahead.
        agent.v.append(min(speed, self._light_limit(agent, 0.0, speed, self.steps * self.dt, arriving=True)))
        self.agents.append(agent)
        return agent

    def _add_vehicle(self, shape: VehicleShape, path: Path, speed: float) -> Agent:
        rng = self.rng
        large = shape.type.surface != "car"
        v_max = float(rng.uniform(6.0, 11.0) if large else rng.uniform(6.0, 15.0))
        agent = Agent(
            CAR,
            len(self.agents),
            path,
            v_max=v_max,
            accel=float(rng.uniform(1.2, 2.5)),
            decel=float(rng.uniform(2.0, 3.0)),
            length=shape.length,
            width=shape.width,
            shade=float(rng.normal()),
            start_step=self.steps,
            shape=shape,
        )
        return self._add(agent, min(speed, v_max))

    def _add_pedestrian(
        self, corner: tuple[int, int], heading: int, q: float, fraction: float, first_turn: int | None = None
    ) -> Agent:
        rng = self.rng
        path = pedestrian_path(self.layout, rng, corner, heading, q, fraction, 12, first_turn=first_turn)
        standing = rng.random() < 0.15
        v_max = 0.0 if standing else float(rng.uniform(1.0, 1.6))
        agent = Agent(
            PEDESTRIAN,
            len(self.agents),
            path,
            v_max=v_max,
            accel=1.0,
            decel=1.5,
            length=0.5,
            width=0.6,
            shade=float(rng.normal()),
            start_step=self.steps,
            height=float(rng.uniform(1.55, 1.95)),
        )
        return self._add(agent, v_max)

    def _ego_xy(self) -> tuple[float, float]:
        ego = self.agents[0]
        x, y, _ = ego.path.pose(ego.s[-1])
        return x, y

    def _free(self, x: float, y: float, clearance: float) -> bool:
        for agent in self.agents:
            if agent.active and agent.kind != PEDESTRIAN:
                ax, ay, _ = agent.path.pose(agent.s[-1])
                if math.hypot(ax - x, ay - y) < clearance:
                    return False
        return True

    def _spawn_vehicle(self, near: tuple[float, float], r_min: float, r_max: float, cyclist: bool) -> None:
        layout, rng = self.layout, self.rng
        for _ in range(10):
            angle = float(rng.uniform(0.0, 2.0 * math.pi))
            radius = float(rng.uniform(r_min, r_max))
            px, py = near[0] + radius * math.cos(angle), near[1] + radius * math.sin(angle)
            heading = int(rng.integers(0, 4))
            along_x = heading % 2 == 0
            position, pitch = (px, layout.pitch_x) if along_x else (py, layout.pitch_y)
            sign = 1.0 if heading < 2 else -1.0
            # The junction ahead and the distance to it.
            ahead = math.floor(position / pitch) + 1 if sign > 0 else math.ceil(position / pitch) - 1
            before = sign * (ahead * pitch - position)
            if not (layout.stop_distance + 5.0 < before < pitch - layout.half_road - 1.0):
                continue  # inside a junction or at its stop line
            node = (ahead, round(py / layout.pitch_y)) if along_x else (round(px / layout.pitch_x), ahead)
            if cyclist:
                offset = layout.lanes * layout.lane_width - 0.7  # along the right edge of the outer lane
            else:
                offset = layout.lane_offset(int(rng.integers(0, layout.lanes)))
            d, r = HEADINGS[heading], HEADINGS[right_of(heading)]
            nx, ny = layout.node(*node)
            sx, sy = nx + offset * r[0] - before * d[0], ny + offset * r[1] - before * d[1]
            ex, ey = near
            if math.hypot(sx - ex, sy - ey) < r_min or not self._free(sx, sy, 15.0):
                continue
            path = vehicle_path(layout, rng, node, heading, offset, before, 8)
            if cyclist:
                v_max = float(rng.uniform(3.5, 7.0))
                agent = Agent(
                    CYCLIST,
                    len(self.agents),
                    path,
                    v_max=v_max,
                    accel=1.0,
                    decel=2.0,
                    length=1.8,
                    width=0.6,
                    shade=float(rng.normal()),
                    start_step=self.steps,
                )
                self._add(agent, v_max)
            else:
                self._add_vehicle(random_vehicle(rng), path, float(rng.uniform(4.0, 12.0)))
            return

    def _spawn_pedestrian(self, near: tuple[float, float], r_min: float, r_max: float) -> None:
        layout, rng = self.layout, self.rng
        angle = float(rng.uniform(0.0, 2.0 * math.pi))
        radius = float(rng.uniform(r_min, r_max))
        px, py = near[0] + radius * math.cos(angle), near[1] + radius * math.sin(angle)
        i, j = math.floor(px / layout.pitch_x), math.floor(py / layout.pitch_y)
        # A corner of that block, walking along one of its two sides.
        cx, cy = 2 * i + 1 + int(rng.integers(0, 2)), 2 * j + 1 + int(rng.integers(0, 2))
        if rng.random() < 0.5:
            heading = 0 if cx % 2 == 1 else 2
        else:
            heading = 1 if cy % 2 == 1 else 3
        q = layout.half_road + float(rng.uniform(0.8, layout.sidewalk_width - 0.8))
        self._add_pedestrian((cx, cy), heading, q, float(rng.uniform(0.05, 0.95)))

    def _populate(self) -> None:
        """Top the traffic around the ego up to the target densities (at once at t = 0, else one by one)."""
        if len(self.agents) >= _MAX_AGENTS:
            return  # instance ids are used up (after hours of simulated driving): no new agents
        ego_xy = self._ego_xy()
        first = self.steps == 0

        def count(kind: str, radius: float) -> int:
            total = 0
            for agent in self.agents:
                if agent.active and agent.kind == kind:
                    x, y, _ = agent.path.pose(agent.s[-1])
                    total += math.hypot(x - ego_xy[0], y - ego_xy[1]) < radius
            return total

        for kind, target, radius, r_min in (
            (CAR, self.target_vehicles, 120.0, 70.0),
            (CYCLIST, self.target_cyclists, 120.0, 70.0),
            (PEDESTRIAN, self.target_pedestrians, 60.0, 35.0),
        ):
            missing = target - count(kind, radius)
            for _ in range(min(missing if first else min(missing, 1), _MAX_AGENTS - len(self.agents))):
                low = 8.0 if first else r_min
                if kind == PEDESTRIAN:
                    self._spawn_pedestrian(ego_xy, low, radius)
                else:
                    self._spawn_vehicle(ego_xy, max(low, 20.0), radius, cyclist=kind == CYCLIST)

    # ---- simulation ------------------------------------------------------------------------------

    def run(self, steps: int) -> None:
        """Simulate until states exist for steps 0 .. ``steps`` - 1; calling again continues."""
        while self.steps < steps - 1:
            self._advance()

    def _advance(self) -> None:
        t = self.steps * self.dt
        active = [a for a in self.agents if a.active]
        poses = np.array([a.path.pose(a.s[-1]) for a in active])
        speeds = np.array([a.v[-1] for a in active])
        walking = np.array([a.kind == PEDESTRIAN for a in active])
        left_turns = [self._next_left_turn(a) for a in active]
        turning_left = np.array([turn is not None for turn in left_turns])
        obstacles = [self._obstacles(a, k, active, poses, walking) for k, a in enumerate(active)]
        blocking = [{j: (gap, direct) for j, gap, _, direct in found} for found in obstacles]
        free = np.array([all(gap > 15.0 for _, gap, _, _ in found) for found in obstacles])
        updates = []
        for k, agent in enumerate(active):
            s, v = agent.s[-1], agent.v[-1]
            ds = agent.path.ds
            desired = min(agent.v_max, float(agent.envelope[min(int(s / ds), len(agent.envelope) - 1)]))
            desired = min(desired, self._light_limit(agent, s, v, t))
            for j, gap, alignment, direct in obstacles[k]:
                if k in blocking[j] and self._has_way(k, j, gap, direct, blocking[j][k], speeds):
                    continue
                wanted = (_WALKING_GAP if walking[k] else _STANDSTILL_GAP) + _HEADWAY * v
                lead = float(speeds[j]) * max(alignment, 0.0)
                desired = min(desired, math.sqrt(max(lead * lead + 2.0 * agent.decel * (gap - wanted), 0.0)))
            if left_turns[k] is not None:
                desired = min(
                    desired,
                    self._yield_limit(agent, k, left_turns[k], poses, speeds, walking, turning_left, free),
                )
            accel = float(np.clip((desired - v) / self.dt, -_HARD_BRAKING, agent.accel))
            v_new = max(v + accel * self.dt, 0.0)
            updates.append((agent, s + 0.5 * (v + v_new) * self.dt, v_new))
        self.steps += 1
        for agent, s, v in updates:
            agent.s.append(s)
            agent.v.append(v)
            while (
                agent.next_stop < len(agent.path.stops)
                and s > agent.path.stops[agent.next_stop].s - agent.stop_margin + 0.05
            ):
                agent.next_stop += 1
        ego = self.agents[0]
        if ego.s[-1] > ego.path.length - 250.0:
            self._ego_junctions += 4
            ego.set_path(self._ego_path(self._ego_offset, self._ego_before))
        ego_xy = self._ego_xy()
        for agent in self.agents[1:]:
            if not agent.active:
                continue
            x, y, _ = agent.path.pose(agent.s[-1])
            if (
                agent.s[-1] >= agent.path.length - 0.5
                or math.hypot(x - ego_xy[0], y - ego_xy[1]) > _DESPAWN_DISTANCE
            ):
                # Its last recorded state stays; it is gone from the next step on.
                agent.active = False
                agent.s.pop()
                agent.v.pop()
        if self.steps % max(round(_SPAWN_INTERVAL / self.dt), 1) == 0:
            self._populate()

    @staticmethod
    def _has_way(
        k: int, j: int, gap: float, direct: bool, other: tuple[float, bool], speeds: np.ndarray
    ) -> bool:
        """Whether agent k goes first when k and j are on each other's paths (crossing, merging).

        One standing right in front of the other keeps its place (the other waits); otherwise the
        one that reaches the other sooner goes first, and on a tie the one added first. One of the
        two always goes, so they never wait for each other forever. (A follower is never on its
        leader's path: paths are probed ahead only.)
        """
        other_gap, other_direct = other
        if direct != other_direct:
            return other_direct
        mine = gap / max(float(speeds[k]), 0.5)
        theirs = other_gap / max(float(speeds[j]), 0.5)
        return mine < theirs or (mine == theirs and k < j)

    @staticmethod
    def _obstacles(
        agent: Agent, k: int, active: list[Agent], poses: np.ndarray, walking: np.ndarray
    ) -> list[tuple[int, float, float, bool]]:
        """Road users on the agent's path ahead: (index, gap between the two, heading alignment,
        whether it stands straight ahead of the agent's current heading).

        The path is probed every metre (60 m ahead for vehicles, 8 m for pedestrians, who only mind
        vehicles), so curves are followed; a user is on it when it comes closer to a probe than half
        their widths plus 0.25 m.
        """
        path = agent.path
        s = agent.s[-1]
        x, y = poses[k, 0], poses[k, 1]
        lookahead = _WALK_LOOKAHEAD if walking[k] else _LOOKAHEAD
        near = np.hypot(poses[:, 0] - x, poses[:, 1] - y) < lookahead + 5.0
        if walking[k]:
            near &= ~walking
        near[k] = False
        if not near.any():
            return []
        stride = max(round(1.0 / path.ds), 1)
        first = int(s / path.ds) + 1
        probes = np.arange(first, min(first + int(lookahead / path.ds), len(path.x)), stride)
        if len(probes) == 0:
            return []
        found = []
        for j in np.flatnonzero(near).tolist():
            other = active[j]
            distance = np.hypot(path.x[probes] - poses[j, 0], path.y[probes] - poses[j, 1])
            closest = int(np.argmin(distance))
            if distance[closest] >= (agent.width + other.width) / 2 + 0.25:
                continue
            alignment = math.cos(poses[j, 2] - path.yaw[probes[closest]])
            # The other's extent along this vehicle's direction: its length if aligned, width if crossing.
            extent = other.length * abs(alignment) + other.width * math.sqrt(
                max(1.0 - alignment * alignment, 0.0)
            )
            gap = probes[closest] * path.ds - s - (agent.length + extent) / 2
            dx, dy = poses[j, 0] - x, poses[j, 1] - y
            yaw = poses[k, 2]
            forward = dx * math.cos(yaw) + dy * math.sin(yaw)
            lateral = -dx * math.sin(yaw) + dy * math.cos(yaw)
            direct = forward > 0.0 and abs(lateral) < (agent.width + other.width) / 2 + 0.25
            found.append((j, gap, alignment, direct))
        return found

    @staticmethod
    def _next_left_turn(agent: Agent) -> tuple[float, float] | None:
        """(start, end) of the left turn a vehicle is about to begin (within 30 m), else None."""
        if agent.kind == PEDESTRIAN:
            return None
        s = agent.s[-1]
        for start, end, sign in agent.path.turns:
            if sign > 0 and start - 0.5 > s:
                return (start, end) if start - s < 30.0 else None
        return None

    def _light_limit(self, agent: Agent, s: float, v: float, t: float, arriving: bool = False) -> float:
        """Speed that still lets the agent stop at a red light ahead (inf when the way is clear).

        ``arriving``: the agent is just being placed, so it has no speed it would be committed to.
        """
        stops = agent.path.stops
        if agent.next_stop >= len(stops):
            return math.inf
        stop = stops[agent.next_stop]
        distance = stop.s - agent.stop_margin - s
        if distance > 80.0:
            return math.inf
        remaining = self.lights.remaining_green(stop.node, stop.axis, t)
        if agent.kind == PEDESTRIAN:
            # Start crossing only while there is green for most of the way (the all-red covers the rest).
            allowed = remaining >= 0.6 * (stop.crossing + max(distance, 0.0)) / max(agent.v_max, 0.1)
        else:
            allowed = remaining > 0.0
        if allowed:
            if distance < 1.0:
                agent.next_stop += 1  # at the line on green: committed, whatever the light does next
            return math.inf
        if agent.kind != PEDESTRIAN and not arriving:
            # Caught by the end of green too close to stop comfortably, or past the line after
            # braking hard: drive on through the all-red. (Within the last 3 m a stop under way
            # is not reconsidered.)
            cannot_stop = distance > 3.0 and v * v / (2.0 * distance) > 1.5 * agent.decel
            if cannot_stop or (distance <= 0.0 and v > 1.0):
                agent.next_stop += 1
                return math.inf
        return math.sqrt(2.0 * agent.decel * max(distance, 0.0))

    def _yield_limit(
        self,
        agent: Agent,
        k: int,
        turn: tuple[float, float],
        poses: np.ndarray,
        speeds: np.ndarray,
        walking: np.ndarray,
        turning_left: np.ndarray,
        free: np.ndarray,
    ) -> float:
        """Wait before a left turn while oncoming traffic would arrive before the turn is done.

        The turn takes until the arc's end at no less than 3 m/s, plus 1.5 s to spare. Oncoming
        vehicles that turn left themselves are ignored, so two of them facing each other never wait
        for one another forever.
        """
        x, y, yaw = poses[k]
        c, s = math.cos(yaw), math.sin(yaw)
        dx = poses[:, 0] - x
        dy = poses[:, 1] - y
        forward = c * dx + s * dy
        lateral = -s * dx + c * dy
        oncoming = ~walking & ~turning_left & (np.cos(poses[:, 2] - yaw) < -0.7)
        oncoming &= (
            (forward > -5.0) & (forward < 150.0) & (lateral > 0.0) & (lateral < 2.0 * self.layout.half_road)
        )
        start, end = turn
        clear = (end - agent.s[-1]) / max(float(speeds[k]), 3.0) + 1.5
        # Where the paths cross: about 0.7 turn radii past the start of the turn.
        to_conflict = forward - (start - agent.s[-1]) - 0.7 * LEFT_TURN_RADIUS
        # Oncoming traffic has the same green, so one standing with nothing in its way may be about
        # to go (4 m/s soon); one held up by others is not, or queues could wait for each other.
        expected = np.where(free, np.maximum(speeds, 4.0), speeds)
        if not np.any(oncoming & (to_conflict < clear * expected)):
            return math.inf
        return math.sqrt(2.0 * agent.decel * max(start - 1.0 - agent.s[-1], 0.0))

    # ---- output ----------------------------------------------------------------------------------

    def primitives(self, step: int) -> tuple[Primitives, np.ndarray]:
        """Primitives of every agent but the ego at ``step``, and per primitive whether its agent moves."""
        rows: list[Row] = []
        moving: list[bool] = []
        for agent in self.agents[1:]:
            state = agent.state(step)
            if state is None:
                continue
            agent_rows = agent.rows(state)
            rows.extend(agent_rows)
            moving.extend([state.speed > MOVING_THRESHOLD_MPS] * len(agent_rows))
        return Primitives.build(rows), np.array(moving, dtype=bool)
