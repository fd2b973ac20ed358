"""Demo: deterministic synthetic data of every wellness type, for trying the server out.

The same user and day always give the same records, so a test can compute exactly what a sync
must store. Days follow a rhythm: a commute walk on weekdays, a longer run or ride at weekends,
sleep from late evening, heart rate that follows sleep and exercise.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from django.conf import settings

from ..base import (
    AuthKind,
    AuthorizationFailed,
    Credentials,
    FormField,
    RawPage,
    Readings,
    Record,
    SourcePlugin,
    SyncContext,
)
from ..http import ProviderHttp

DEMO_USERNAME = "demouser"
DEMO_PASSWORD = "password"  # noqa: S105 - the documented demo login, not a secret
TZ_OFFSET = -300  # the demo user lives at UTC-05:00
HEIGHT_CM = 178.0

WELLNESS_TYPES = (
    "activities",
    "sleeps",
    "heart_rate",
    "weight",
    "bmi",
    "body_fat",
    "height",
    "blood_pressure",
    "blood_glucose",
    "blood_oxygen",
    "meals",
    "locations",
    "resting_heart_rate",
    "heart_rate_variability",
    "respiratory_rate",
    "body_temperature",
    "vo2_max",
)


def _local(day: date, hour: float) -> datetime:
    """The UTC instant of a local wall-clock hour on a day."""
    return datetime.combine(day, time(0), tzinfo=UTC) + timedelta(hours=hour, minutes=-TZ_OFFSET)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class DemoGenerator:
    """What the "provider" holds for one user: its raw day documents."""

    def __init__(self, user: str, heart_rate_interval: int) -> None:
        self.user = user
        self.heart_rate_interval = heart_rate_interval

    def rng(self, day: date, kind: str) -> random.Random:
        return random.Random(f"{self.user}:{day.isoformat()}:{kind}")

    def day_document(self, day: date) -> dict[str, Any]:
        activities = self.activities(day)
        sleep = self.sleep(day)
        return {
            "date": day.isoformat(),
            "tz_offset_minutes": TZ_OFFSET,
            "activities": activities,
            "sleep": sleep,
            "heart_rate": self.heart_rate(day, activities, sleep),
            "body": self.body(day),
            "vitals": self.vitals(day),
            "night": self.night(day, sleep),
            "meals": self.meals(day),
            "places": self.places(day, activities),
        }

    def activities(self, day: date) -> list[dict[str, Any]]:
        rng = self.rng(day, "activities")
        weekend = day.weekday() >= 5
        plan: list[tuple[str, float, float]] = []  # kind, local start hour, minutes
        if weekend:
            kind = "running" if rng.random() < 0.6 else "cycling"
            plan.append((kind, 9 + rng.random() * 1.5, 35 + rng.random() * 50))
        else:
            plan.append(("walking", 7.5 + rng.random() * 0.5, 20 + rng.random() * 15))
            plan.append(("walking", 17.5 + rng.random() * 0.5, 20 + rng.random() * 15))
            if rng.random() < 0.3:
                plan.append(("running", 19 + rng.random(), 25 + rng.random() * 20))
        out = []
        for index, (kind, hour, minutes) in enumerate(plan):
            start = _local(day, hour).replace(microsecond=0)
            duration = round(minutes * 60)
            speed = {"walking": 1.35, "running": 2.9, "cycling": 6.2}[kind]
            distance = round(duration * speed * (0.9 + rng.random() * 0.2), 1)
            steps = 0 if kind == "cycling" else round(distance / (0.75 if kind == "walking" else 1.1))
            calories = round(duration / 60 * {"walking": 4.5, "running": 11.0, "cycling": 8.5}[kind], 1)
            out.append(
                {
                    "id": f"{day.isoformat()}-act-{index}",
                    "kind": kind,
                    "start": _iso(start),
                    "end": _iso(start + timedelta(seconds=duration)),
                    "duration_s": duration,
                    "distance_m": distance,
                    "steps": steps,
                    "kcal": calories,
                }
            )
        return out

    def sleep(self, day: date) -> dict[str, Any]:
        """The night that ends on the morning of `day`."""
        rng = self.rng(day, "sleep")
        weekend = day.weekday() >= 5
        bed = _local(day, -1.5 + rng.random() * 1.2).replace(microsecond=0, second=0)
        in_bed = round(420 + rng.random() * 90 + (45 if weekend else 0))
        awake = round(10 + rng.random() * 35)
        return {
            "id": f"{day.isoformat()}-sleep",
            "start": _iso(bed),
            "end": _iso(bed + timedelta(minutes=in_bed)),
            "minutes_in_bed": in_bed,
            "minutes_awake": awake,
            "wakeups": 1 + int(rng.random() * 4),
        }

    def heart_rate(self, day: date, activities: list[dict[str, Any]], sleep: dict[str, Any]) -> list[list[Any]]:
        rng = self.rng(day, "heart_rate")
        start = _local(day, 0)
        busy = [(_parse(a["start"]), _parse(a["end"]), a["kind"]) for a in activities]
        asleep_until = _parse(sleep["end"])
        samples = []
        for minute in range(0, 24 * 60, self.heart_rate_interval):
            moment = start + timedelta(minutes=minute)
            hour = minute / 60
            bpm = 64 + 6 * math.sin((hour - 9) / 24 * 2 * math.pi) + rng.gauss(0, 2.5)
            if moment < asleep_until or hour >= 23:
                bpm -= 10
            for begin, end, kind in busy:
                if begin <= moment < end:
                    bpm += {"walking": 30, "running": 75, "cycling": 60}[kind]
            samples.append([_iso(moment), round(bpm)])
        return samples

    def body(self, day: date) -> dict[str, Any]:
        rng = self.rng(day, "body")
        weight = 78 + 1.5 * math.sin(day.toordinal() / 45) + rng.gauss(0, 0.25)
        return {
            "measured_at": _iso(_local(day, 6.75)),
            "weight_kg": round(weight, 2),
            "fat_percent": round(18 + 0.4 * (weight - 78) + rng.gauss(0, 0.3), 1),
        }

    def vitals(self, day: date) -> dict[str, Any]:
        rng = self.rng(day, "vitals")
        vitals: dict[str, Any] = {
            "measured_at": _iso(_local(day, 7.0)),
            "glucose_mg_dl": round(88 + rng.gauss(0, 6), 1),
            "spo2_percent": round(min(100.0, 97 + rng.gauss(0, 0.8)), 1),
        }
        if day.toordinal() % 3 == 0:
            vitals["bp"] = [round(118 + rng.gauss(0, 6)), round(77 + rng.gauss(0, 4))]
        return vitals

    def night(self, day: date, sleep: dict[str, Any]) -> dict[str, Any]:
        """What a ring or a watch reports of the night that ended on the morning of `day`: sleep
        stages, resting heart rate, HRV, breathing, temperature, and the day's VO2 max estimate."""
        rng = self.rng(day, "night")
        asleep = sleep["minutes_in_bed"] - sleep["minutes_awake"]
        deep = round(asleep * (0.15 + rng.random() * 0.08))
        rem = round(asleep * (0.2 + rng.random() * 0.06))
        deviation = round(rng.gauss(0, 0.25), 2)
        night: dict[str, Any] = {
            "measured_at": sleep["end"],
            "stages_min": {"deep": deep, "light": asleep - deep - rem, "rem": rem, "awake": sleep["minutes_awake"]},
            "resting_bpm": round(52 + rng.gauss(0, 2)),
            "hrv_rmssd_ms": round(45 + rng.gauss(0, 8), 1),
            "breaths_per_min": round(14.5 + rng.gauss(0, 0.6), 1),
            "temperature_c": round(36.4 + deviation, 2),
            "temperature_deviation_c": deviation,
            "vo2_max": round(44 + 1.5 * math.sin(day.toordinal() / 60), 1),
        }
        return night

    def meals(self, day: date) -> list[dict[str, Any]]:
        rng = self.rng(day, "meals")
        out = []
        for index, (name, hour, kcal) in enumerate(
            (("Breakfast", 7.2, 450), ("Lunch", 12.5, 700), ("Dinner", 19.0, 800))
        ):
            start = _local(day, hour + rng.random() * 0.5).replace(microsecond=0, second=0)
            out.append(
                {
                    "id": f"{day.isoformat()}-meal-{index}",
                    "name": name,
                    "start": _iso(start),
                    "end": _iso(start + timedelta(minutes=25)),
                    "kcal": round(kcal * (0.8 + rng.random() * 0.4)),
                }
            )
        return out

    def places(self, day: date, activities: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if day.weekday() >= 5:
            return []
        home_leave = activities[0]["start"]
        back_home = activities[1]["end"] if len(activities) > 1 else activities[0]["end"]
        return [
            {
                "id": f"{day.isoformat()}-place-work",
                "name": "Office",
                "start": activities[0]["end"],
                "end": activities[1]["start"] if len(activities) > 1 else back_home,
                "lat": 40.7536,
                "lon": -73.9832,
                "left_home": home_leave,
            }
        ]


def _parse(value: str) -> datetime:
    """`YYYY-MM-DDTHH:MM:SSZ` as an aware UTC datetime (fromisoformat: strptime is 10x slower)."""
    return datetime.fromisoformat(value)


class DemoSource(SourcePlugin):
    slug = "demo"
    name = "Demo"
    auth_kind = AuthKind.CREDENTIALS
    data_types = WELLNESS_TYPES
    history_days = 30
    credential_fields = (
        FormField("username", "Username", autocomplete="username"),
        FormField("password", "Password", kind="password", autocomplete="current-password"),
    )

    def authorize_with_form(
        self, form: Mapping[str, str], app_config: Mapping[str, str], http: ProviderHttp
    ) -> Credentials:
        if form.get("username", "").strip() != DEMO_USERNAME or form.get("password", "") != DEMO_PASSWORD:
            raise AuthorizationFailed("Wrong username or password. The demo account is demouser / password.")
        return Credentials(data={"user": DEMO_USERNAME}, external_user_id=DEMO_USERNAME)

    def history_window(self, now: datetime) -> tuple[date, date]:
        today = (now + timedelta(minutes=TZ_OFFSET)).date()
        return today - timedelta(days=settings.DEMO_HISTORY_DAYS - 1), today

    def fetch(self, ctx: SyncContext) -> Iterator[RawPage]:
        generator = DemoGenerator(ctx.external_user_id or DEMO_USERNAME, settings.DEMO_HEART_RATE_INTERVAL_MINUTES)
        first, last = self.history_window(ctx.now)
        if ctx.cursor.get("day"):
            # Re-pull the last synced day: it was partial when it was last read.
            first = max(first, date.fromisoformat(ctx.cursor["day"]))
        day = first
        while day <= last:
            yield RawPage(type="day", payload=generator.day_document(day), cursor={"day": day.isoformat()})
            day += timedelta(days=1)

    def normalize(self, page: RawPage, ctx: SyncContext) -> list[Record | Readings]:
        """Today's records that have happened: a reading taken, a sleep or a workout ended (a
        device reports a night once it is over, with its measures)."""
        items = normalize_day(page.payload)
        doc = page.payload
        ends = datetime.fromisoformat(doc["date"]) + timedelta(days=1, minutes=-int(doc["tz_offset_minutes"]))
        if ends.replace(tzinfo=UTC) <= ctx.now:  # a day gone by: everything in it has happened
            return items
        happened: list[Record | Readings] = []
        for item in items:
            if isinstance(item, Readings):  # in time order: those up to now
                taken = bisect_right(item.start_times, ctx.now)
                happened.append(Readings(item.type, *(column[:taken] for column in item.columns())))
            elif (item.end_time or item.start_time) <= ctx.now:
                happened.append(item)
        return happened


def normalize_day(doc: dict[str, Any]) -> list[Record | Readings]:
    tz = int(doc["tz_offset_minutes"])
    day = doc["date"]
    records: list[Record | Readings] = []
    for act in doc["activities"]:
        records.append(
            Record(
                type="activities",
                external_id=act["id"],
                start_time=_parse(act["start"]),
                end_time=_parse(act["end"]),
                tz_offset=tz,
                fields={
                    "type": act["kind"],
                    "duration": act["duration_s"],
                    "distance": act["distance_m"],
                    "steps": act["steps"],
                    "calories": act["kcal"],
                },
                source_data=act,
            )
        )
    sleep = doc["sleep"]
    asleep = sleep["minutes_in_bed"] - sleep["minutes_awake"]
    records.append(
        Record(
            type="sleeps",
            external_id=sleep["id"],
            start_time=_parse(sleep["start"]),
            end_time=_parse(sleep["end"]),
            tz_offset=tz,
            day=date.fromisoformat(day),  # the night that ends on the morning of `day`
            fields={
                "day": day,
                "mainSleep": True,
                "timeAsleep": asleep,
                "timeAwake": sleep["minutes_awake"],
                "timeInBed": sleep["minutes_in_bed"],
                "efficiency": round(100 * asleep / sleep["minutes_in_bed"]),
                "numberOfWakeups": sleep["wakeups"],
                "deepSleep": doc["night"]["stages_min"]["deep"],
                "lightSleep": doc["night"]["stages_min"]["light"],
                "remSleep": doc["night"]["stages_min"]["rem"],
            },
            source_data=sleep,
        )
    )
    # 1,440 a day at the finest interval: handed over column by column, not a Record each.
    minutes = doc["heart_rate"]
    stamps = [at for at, _ in minutes]
    bpms = [bpm for _, bpm in minutes]
    records.append(
        Readings(
            "heart_rate",
            list(map("hr-".__add__, stamps)),
            list(map(datetime.fromisoformat, stamps)),
            [tz] * len(stamps),
            bpms,
            [{"value": bpm, "unit": "bpm"} for bpm in bpms],
            [{"timestamp": at, "value": bpm} for at, bpm in minutes],
        )
    )
    body = doc["body"]
    at = body["measured_at"]
    records.append(_reading("weight", f"weight-{day}", at, tz, body["weight_kg"], "kg", body))
    records.append(
        _reading("bmi", f"bmi-{day}", at, tz, round(body["weight_kg"] / (HEIGHT_CM / 100) ** 2, 1), "kg/m2", body)
    )
    records.append(_reading("body_fat", f"fat-{day}", at, tz, body["fat_percent"], "%", body))
    if date.fromisoformat(day).day == 1:
        records.append(_reading("height", f"height-{day}", at, tz, HEIGHT_CM, "cm", body))
    vitals = doc["vitals"]
    at = vitals["measured_at"]
    records.append(_reading("blood_glucose", f"glucose-{day}", at, tz, vitals["glucose_mg_dl"], "mg/dL", vitals))
    records.append(_reading("blood_oxygen", f"spo2-{day}", at, tz, vitals["spo2_percent"], "%", vitals))
    if "bp" in vitals:
        systolic, diastolic = vitals["bp"]
        records.append(
            Record(
                type="blood_pressure",
                external_id=f"bp-{day}",
                start_time=_parse(at),
                tz_offset=tz,
                value=systolic,
                fields={"systolic": systolic, "diastolic": diastolic, "unit": "mmHg"},
                source_data=vitals,
            )
        )
    night = doc["night"]
    at = night["measured_at"]
    records.append(_reading("resting_heart_rate", f"rhr-{day}", at, tz, night["resting_bpm"], "bpm", night))
    records.append(_reading("heart_rate_variability", f"hrv-{day}", at, tz, night["hrv_rmssd_ms"], "ms", night))
    records.append(
        _reading("respiratory_rate", f"breathing-{day}", at, tz, night["breaths_per_min"], "breaths/min", night)
    )
    records.append(
        _reading(
            "body_temperature",
            f"temp-{day}",
            at,
            tz,
            night["temperature_c"],
            "°C",
            night,
            deviation=night["temperature_deviation_c"],
        )
    )
    records.append(_reading("vo2_max", f"vo2max-{day}", at, tz, night["vo2_max"], "mL/kg/min", night))
    for meal in doc["meals"]:
        records.append(
            Record(
                type="meals",
                external_id=meal["id"],
                start_time=_parse(meal["start"]),
                end_time=_parse(meal["end"]),
                tz_offset=tz,
                fields={"name": meal["name"], "calories": meal["kcal"]},
                source_data=meal,
            )
        )
    for place in doc["places"]:
        records.append(
            Record(
                type="locations",
                external_id=place["id"],
                start_time=_parse(place["start"]),
                end_time=_parse(place["end"]),
                tz_offset=tz,
                fields={"name": place["name"], "latitude": place["lat"], "longitude": place["lon"]},
                source_data=place,
            )
        )
    return records


def _reading(
    kind: str,
    external_id: str,
    at: str,
    tz: int,
    value: float,
    unit: str,
    source: dict[str, Any] | None = None,
    **extra: Any,
) -> Record:
    return Record(
        type=kind,
        external_id=external_id,
        start_time=_parse(at),
        tz_offset=tz,
        value=value,
        fields={"value": value, "unit": unit, **extra},
        source_data=source if source is not None else {"timestamp": at, "value": value},
    )
