"""Routes and traffic: lanes and stop lines where the street says, lights obeyed, realistic motion."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kdmos_ros.sim.layout import HEADINGS, StreetLayout, right_of
from kdmos_ros.sim.routes import pedestrian_path, vehicle_path
from kdmos_ros.sim.traffic import CAR, CYCLIST, EGO, PEDESTRIAN, Traffic

LAYOUT = StreetLayout(pitch_x=90.0, pitch_y=100.0, lanes=2, sidewalk_width=4.0)
DT = 0.05


def test_vehicle_path_keeps_its_lane_and_stops_at_stop_lines() -> None:
    offset = LAYOUT.lane_offset(1)
    path = vehicle_path(LAYOUT, np.random.default_rng(3), (0, 0), 0, offset, 60.0, junctions=6, p_turn=0.6)
    steps = np.hypot(np.diff(path.x), np.diff(path.y))
    np.testing.assert_allclose(steps, path.ds, atol=1e-3)  # evenly sampled, no jumps
    assert np.abs(np.diff(path.yaw)).max() < path.ds / 6.0 + 1e-9  # turns no tighter than 6 m
    assert any(sign > 0 for *_, sign in path.turns) or any(sign < 0 for *_, sign in path.turns)
    assert len(path.stops) == 6
    for stop in path.stops:
        x, y, yaw = path.pose(stop.s)
        nx, ny = LAYOUT.node(*stop.node)
        heading = round(yaw / (math.pi / 2)) % 4
        assert stop.axis == heading % 2
        d, r = HEADINGS[heading], HEADINGS[right_of(heading)]
        # On the lane line, at the stop distance before the junction centre.
        assert (x - nx) * d[0] + (y - ny) * d[1] == pytest.approx(-LAYOUT.stop_distance, abs=1e-6)
        assert (x - nx) * r[0] + (y - ny) * r[1] == pytest.approx(offset, abs=1e-6)


def test_pedestrian_path_stays_off_the_road_except_on_crosswalks() -> None:
    q = LAYOUT.half_road + 2.0
    path = pedestrian_path(LAYOUT, np.random.default_rng(5), (1, 1), 0, q, 0.5, corners=20)
    across_x = np.abs(path.y - np.round(path.y / LAYOUT.pitch_y) * LAYOUT.pitch_y)
    across_y = np.abs(path.x - np.round(path.x / LAYOUT.pitch_x) * LAYOUT.pitch_x)
    on_road = (across_x < LAYOUT.half_road) | (across_y < LAYOUT.half_road)
    assert on_road.any() and path.stops  # it does cross streets
    # Every stretch on the road begins at a stop (the curb) and is no longer than the crosswalk.
    starts = np.flatnonzero(np.diff(on_road.astype(int)) == 1) + 1
    stop_s = np.array([stop.s for stop in path.stops])
    for start in starts:
        assert np.min(np.abs(stop_s - start * path.ds)) < q - LAYOUT.half_road + 1.0
    assert all(stop.crossing == pytest.approx(2 * q) for stop in path.stops)


@pytest.fixture(scope="module")
def traffic() -> Traffic:
    simulated = Traffic(LAYOUT, 7, np.random.default_rng([7, 2]), DT)
    simulated.run(1200)  # one minute
    return simulated


def test_speeds_and_accelerations_are_realistic(traffic: Traffic) -> None:
    kinds = {agent.kind for agent in traffic.agents}
    assert {EGO, CAR, PEDESTRIAN} <= kinds
    for agent in traffic.agents:
        v = np.array(agent.v)
        assert np.all(v >= 0.0)
        limit = {EGO: 13.9, CAR: 15.0, CYCLIST: 7.0, PEDESTRIAN: 1.6}[agent.kind]
        assert v.max() <= limit + 1e-9
        if len(v) > 1:
            assert np.abs(np.diff(v)).max() / DT <= 6.0 + 1e-9
    ego = np.array(traffic.agents[0].v)
    assert ego.max() > 8.0  # drives at city speed somewhere in the minute


def test_vehicles_cross_stop_lines_only_on_green(traffic: Traffic) -> None:
    lights = traffic.lights
    crossings = 0
    for agent in traffic.agents:
        if agent.kind == PEDESTRIAN:
            continue
        s = np.array(agent.s)
        for stop in agent.path.stops:
            line = stop.s - agent.stop_margin + 0.5  # clearly past it, not just creeping up to it
            passed = np.flatnonzero((s[:-1] <= line) & (s[1:] > line))
            for k in passed:
                t = (agent.start_step + k) * DT
                crossings += 1
                # Green, or the light turned red moments ago and the vehicle could not stop.
                recent = any(
                    lights.remaining_green(stop.node, stop.axis, t - back) > 0
                    for back in np.arange(0, 2.5, DT)
                )
                assert recent, f"{agent.kind} {agent.instance} ran a red light at {stop.node} at t={t:.2f}"
    assert crossings > 10


def test_first_junction_starts_with_cars_that_wait_then_drive_off(traffic: Traffic) -> None:
    waiting = [a for a in traffic.agents if a.kind == CAR and a.start_step == 0 and a.v[0] == 0.0]
    assert waiting
    for agent in waiting:
        v = np.array(agent.v)
        departure = int(np.argmax(v > 0.3))
        assert departure > 0 and 1.5 <= departure * DT <= 8.0
        assert np.all(v[:departure] <= 0.3)


def test_traffic_is_deterministic_and_seed_dependent() -> None:
    def speeds(seed: int) -> list[list[float]]:
        simulated = Traffic(LAYOUT, seed, np.random.default_rng([seed, 2]), DT)
        simulated.run(100)
        return [agent.v for agent in simulated.agents]

    assert speeds(3) == speeds(3)
    assert speeds(3) != speeds(4)
