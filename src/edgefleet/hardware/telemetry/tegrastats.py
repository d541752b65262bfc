"""tegrastats: parse its lines (pure) and run it in the background (``TegrastatsReader``).

One line per interval, with fields that differ by module and JetPack release:

* Xavier / JetPack 4: ``VDD_IN 4067/4067`` (mW without unit), ``GR3D_FREQ 62%@306``,
  ``PMIC@100C`` (a fixed placeholder, ignored), AGX Xavier rails named ``GPU``/``CPU``/``SOC``.
* Orin / JetPack 5: ``VDD_IN 5299mW/5299mW``, upper-case sensors, ``CV0@-256C`` for an
  absent sensor (ignored).
* Orin / JetPack 6+: a ``MM-DD-YYYY HH:MM:SS`` prefix, lower-case sensors, ``GR3D_FREQ
  0%@[305,305]`` (one frequency per GPC), sometimes ``cpu@45.8C/45.8C`` and rails with three
  values (current/average/peak; the peak is ignored).

``parse_tegrastats`` turns a line into flat telemetry keys: ``ram_used_mb``,
``swap_used_mb``, ``cpu_percent`` (mean over online cores), ``cpu_freq_mhz``,
``gpu_util_percent``, ``gpu_freq_mhz``, ``emc_util_percent``, ``temp_<sensor>_c``,
``temp_max_c``, ``power_<rail>_mw``, ``power_<rail>_avg_mw`` and ``power_total_mw``
(``VDD_IN``/``POM_5V_IN`` where the board has an input rail, else the sum of the rails).
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import threading
from typing import IO

log = logging.getLogger(__name__)
Stats = dict[str, "float | int | str | bool"]

_DATE = re.compile(r"^\s*\d{2}-\d{2}-\d{4}\s+\d{2}:\d{2}:\d{2}\s+")
_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB")
_SWAP = re.compile(r"\bSWAP (\d+)/(\d+)MB(?:\s*\(cached (\d+)MB\))?")
_CPU = re.compile(r"\bCPU \[([^\]]*)\]")
_CORE = re.compile(r"^(\d+)%(?:@(\d+))?$")
_GR3D = re.compile(r"\bGR3D_FREQ\s+(?:(\d+)%)?(?:@\[?([\d,]+)\]?)?")
_EMC = re.compile(r"\bEMC_FREQ\s+(?:(\d+)%)?(?:@(\d+))?")
_TEMP = re.compile(r"(?<![\w%])([A-Za-z][A-Za-z0-9_]*)@(-?\d+(?:\.\d+)?)C(?:/-?\d+(?:\.\d+)?C)?")
_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?:/\d+(?:mW)?)?(?=\s|$)")
_NOT_RAILS = {"RAM", "SWAP", "IRAM", "NC"}
_IGNORED_SENSORS = {"pmic"}  # always reads 100C on Xavier/Nano
_INPUT_RAILS = ("VDD_IN", "POM_5V_IN")
ABSENT_SENSOR_C = -256.0


def parse_tegrastats(line: str) -> Stats:
    """Parse one tegrastats line into flat telemetry keys; unknown fields are skipped.

    Raises:
        ValueError: the line has no ``RAM`` field (not a tegrastats line).
    """
    text = _DATE.sub("", line.strip())
    ram = _RAM.search(text)
    if not ram:
        raise ValueError(f"not a tegrastats line: {line[:80]!r}")
    out: Stats = {"ram_used_mb": int(ram.group(1)), "ram_total_mb": int(ram.group(2))}
    if (swap := _SWAP.search(text)) is not None:
        out["swap_used_mb"] = int(swap.group(1))
        out["swap_total_mb"] = int(swap.group(2))
        if swap.group(3) is not None:
            out["swap_cached_mb"] = int(swap.group(3))
    if (cpu := _CPU.search(text)) is not None:
        loads, freqs, total = [], [], 0
        for entry in cpu.group(1).split(","):
            entry = entry.strip()
            if not entry:
                continue
            total += 1
            m = _CORE.match(entry)
            if m:
                loads.append(int(m.group(1)))
                if m.group(2):
                    freqs.append(int(m.group(2)))
        out["cpu_cores"] = total
        out["cpu_cores_online"] = len(loads)
        if loads:
            out["cpu_percent"] = round(sum(loads) / len(loads), 2)
        if freqs:
            out["cpu_freq_mhz"] = max(freqs)
    if (gr3d := _GR3D.search(text)) is not None:
        if gr3d.group(1) is not None:
            out["gpu_util_percent"] = int(gr3d.group(1))
        if gr3d.group(2):
            out["gpu_freq_mhz"] = max(int(f) for f in gr3d.group(2).split(",") if f)
    if (emc := _EMC.search(text)) is not None:
        if emc.group(1) is not None:
            out["emc_util_percent"] = int(emc.group(1))
        if emc.group(2):
            out["emc_freq_mhz"] = int(emc.group(2))
    temps = []
    for name, value in _TEMP.findall(text):
        sensor, celsius = name.lower(), float(value)
        if celsius <= ABSENT_SENSOR_C or sensor in _IGNORED_SENSORS:
            continue
        out[f"temp_{sensor}_c"] = celsius
        temps.append(celsius)
    if temps:
        out["temp_max_c"] = max(temps)
    rails: dict[str, int] = {}
    for name, current, average in _RAIL.findall(text):
        if name in _NOT_RAILS:
            continue
        rails[name] = int(current)
        out[f"power_{name.lower()}_mw"] = int(current)
        out[f"power_{name.lower()}_avg_mw"] = int(average)
    if rails:
        source = next((r for r in _INPUT_RAILS if r in rails), None)
        out["power_total_mw"] = rails[source] if source else sum(rails.values())
        out["power_total_source"] = source or "+".join(rails)
    return out


class TegrastatsReader:
    """Runs ``tegrastats --interval N`` and keeps the latest parsed sample.

    ``start()`` spawns the process and a reader thread; ``latest()`` is cheap and safe from
    any thread; ``stop()`` terminates the process. Lines that do not parse are counted
    (``bad_lines``), never raised.
    """

    def __init__(self, interval_ms: int = 1000, *, executable: str = "tegrastats"):
        self.interval_ms = interval_ms
        self.executable = executable
        self.lines = 0
        self.bad_lines = 0
        self._latest: Stats | None = None
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None

    @staticmethod
    def available(executable: str = "tegrastats") -> bool:
        return shutil.which(executable) is not None

    def start(self) -> TegrastatsReader:
        exe = shutil.which(self.executable)
        if exe is None:
            raise FileNotFoundError(f"{self.executable} is not on PATH")
        self._proc = subprocess.Popen([exe, "--interval", str(self.interval_ms)], stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, text=True, bufsize=1)
        assert self._proc.stdout is not None
        self._thread = threading.Thread(target=self._pump, args=(self._proc.stdout,),
                                        name="tegrastats", daemon=True)
        self._thread.start()
        return self

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            if not line.strip():
                continue
            self.lines += 1
            try:
                sample = parse_tegrastats(line)
            except ValueError:
                self.bad_lines += 1
                continue
            with self._lock:
                self._latest = sample

    def latest(self) -> Stats | None:
        with self._lock:
            return dict(self._latest) if self._latest is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout: float = 2.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        if self._thread is not None:
            self._thread.join(timeout)  # the pipe is at EOF once the process is gone
        if proc.stdout:
            proc.stdout.close()

    def __enter__(self) -> TegrastatsReader:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
