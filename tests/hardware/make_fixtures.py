"""Writes the fixture trees under fixtures/trees (run once; the output is committed).

Contents follow what the real files hold on each device: NUL-terminated device-tree
strings, the one-line /etc/nv_tegra_release, /proc/meminfo and /proc/cpuinfo excerpts,
sysfs thermal zones in millidegrees with passive trip points.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent / "fixtures" / "trees"

ARM_CPU = "processor\t: {i}\nBogoMIPS\t: 62.50\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU part\t: 0xd42\n\n"
X86_CPU = "processor\t: {i}\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Core(TM) i9-10900K CPU @ 3.70GHz\nflags\t\t: fpu vme de pse tsc msr pae mce avx2\n\n"


def meminfo(kb: int) -> str:
    return f"MemTotal:       {kb} kB\nMemFree:        {kb // 2} kB\nMemAvailable:   {kb * 3 // 4} kB\nSwapTotal:      {kb // 2} kB\nSwapFree:       {kb // 2} kB\n"


def release(r: int, rev: str) -> str:
    return f"# R{r} (release), REVISION: {rev}, GCID: 33958178, BOARD: generic, EABI: aarch64, DATE: Tue Aug  1 19:57:35 UTC 2023\n"


def zone(root: Path, n: int, kind: str, milli: int, passive: int | None = None) -> None:
    z = root / f"sys/class/thermal/thermal_zone{n}"
    z.mkdir(parents=True, exist_ok=True)
    (z / "type").write_text(kind + "\n")
    (z / "temp").write_text(f"{milli}\n")
    if passive is not None:
        (z / "trip_point_0_type").write_text("passive\n")
        (z / "trip_point_0_temp").write_text(f"{passive}\n")
        (z / "trip_point_1_type").write_text("critical\n")
        (z / "trip_point_1_temp").write_text("104500\n")


def jetson(name: str, model: str, compatible: list[str], rel: str, mem_kb: int, cpus: int) -> Path:
    root = HERE / name
    (root / "proc/device-tree").mkdir(parents=True, exist_ok=True)
    (root / "proc/device-tree/model").write_bytes(model.encode() + b"\0")
    (root / "proc/device-tree/compatible").write_bytes(b"".join(c.encode() + b"\0" for c in compatible))
    (root / "etc").mkdir(exist_ok=True)
    (root / "etc/nv_tegra_release").write_text(rel)
    (root / "proc/meminfo").write_text(meminfo(mem_kb))
    (root / "proc/cpuinfo").write_text("".join(ARM_CPU.format(i=i) for i in range(cpus)))
    (root / "proc/loadavg").write_text("0.52 0.40 0.31 1/912 4242\n")
    zone(root, 0, "cpu-thermal", 47937, 99000)
    zone(root, 1, "gpu-thermal", 45875, 99000)
    zone(root, 2, "cv0-thermal", -256000)
    zone(root, 3, "tj-thermal", 48875, 99000)
    return root


def main() -> None:
    jetson("agx-orin-64gb", "NVIDIA Jetson AGX Orin Developer Kit",
           ["nvidia,p3737-0000+p3701-0005", "nvidia,p3701-0005", "nvidia,tegra234"],
           release(35, "4.1"), 64335836, 12)
    jetson("agx-orin-32gb", "Jetson AGX Orin", ["nvidia,p3737-0000+p3701-0004", "nvidia,p3701-0004", "nvidia,tegra234"],
           release(36, "3.0"), 31433736, 8)
    jetson("orin-nx-16gb", "NVIDIA Jetson Orin NX Engineering Reference Developer Kit",
           ["nvidia,p3768-0000+p3767-0000", "nvidia,p3767-0000", "nvidia,tegra234"],
           release(36, "4.0"), 15757552, 8)
    jetson("orin-nano", "NVIDIA Jetson Orin Nano Developer Kit",
           ["nvidia,p3768-0000+p3767-0005", "nvidia,p3767-0005", "nvidia,tegra234"],
           release(36, "4.3"), 7802260, 6)
    jetson("xavier-nx", "NVIDIA Jetson Xavier NX Developer Kit",
           ["nvidia,p3509-0000+p3668-0001", "nvidia,jetson-xavier-nx", "nvidia,tegra194"],
           release(32, "7.1"), 7958712, 6)

    root = HERE / "x86-rtx3090"
    gpu = root / "proc/driver/nvidia/gpus/0000:01:00.0"
    gpu.mkdir(parents=True, exist_ok=True)
    (gpu / "information").write_text(
        "Model: \t\t NVIDIA GeForce RTX 3090\nIRQ:   \t\t 158\nGPU UUID: \t GPU-5f3c0d1e-1b2a-4c7e-9f11-0a1b2c3d4e5f\n"
        "Video BIOS: \t 94.02.42.00.a9\nBus Type: \t PCIe\nDMA Size: \t 47 bits\nDMA Mask: \t 0x7fffffffffff\n"
        "Bus Location: \t 0000:01:00.0\nDevice Minor: \t 0\nGPU Excluded:\t No\n")
    (root / "proc/driver/nvidia/version").write_text(
        "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.183.01  Sun May 12 19:39:15 UTC 2024\n")
    (root / "proc/meminfo").write_text(meminfo(65695512))
    (root / "proc/cpuinfo").write_text("".join(X86_CPU.format(i=i) for i in range(20)))
    zone(root, 0, "x86_pkg_temp", 41000, 0)

    root = HERE / "cpu-x86_64"
    (root / "proc").mkdir(parents=True, exist_ok=True)
    (root / "proc/meminfo").write_text(meminfo(16318412))
    (root / "proc/cpuinfo").write_text("".join(X86_CPU.format(i=i) for i in range(4)))
    (root / "proc/loadavg").write_text("1.00 0.90 0.80 2/300 999\n")
    zone(root, 0, "acpitz", 27800, 95000)
    zone(root, 1, "x86_pkg_temp", 38000)

    root = HERE / "cpu-aarch64-rpi"
    (root / "proc/device-tree").mkdir(parents=True, exist_ok=True)
    (root / "proc/device-tree/model").write_bytes(b"Raspberry Pi 4 Model B Rev 1.4\0")
    (root / "proc/device-tree/compatible").write_bytes(b"raspberrypi,4-model-b\0brcm,bcm2711\0")
    (root / "proc/meminfo").write_text(meminfo(3884008))
    (root / "proc/cpuinfo").write_text("".join(ARM_CPU.format(i=i) for i in range(4)))
    zone(root, 0, "cpu-thermal", 52582, 0)


if __name__ == "__main__":
    main()
