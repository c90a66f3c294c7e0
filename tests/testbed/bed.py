"""The whole local test bed in one object: used by the demo and by benchmarks."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import boto3

from tests.testbed.daemon import render_toml
from tests.testbed.loopfs import LoopFilesystem, ReflinkVolume
from tests.testbed.mariadb import MariaDB
from tests.testbed.moto import FAKE_CREDENTIALS, MotoServer

BUCKET = "backupd-demo"


class LocalBed:
    """A MariaDB on a loop-mounted ext4, moto as S3/EC2, and a backupd config for them.

    `reflink=True` puts the ext4 image and the local snapshot directory on an XFS
    (reflink=1) loop mount, so local snapshots are FICLONE clones instead of copies.
    """

    def __init__(self, base: Path, reflink: bool = False) -> None:
        self.base = base
        self.volume = ReflinkVolume(base, base / "data") if reflink else None
        self.fs: LoopFilesystem = (
            self.volume.data
            if self.volume
            else LoopFilesystem(base / "data.img", base / "data", size_mb=512)
        )
        self.snapshot_dir = self.volume.snapshot_dir if self.volume else base / "snapshots"
        self.db = MariaDB(base / "mariadb", self.fs.mount_point / "mysql", server_id=1)
        self.moto = MotoServer(base / "moto.log")

    def up(self) -> LocalBed:
        if self.base.exists():
            self.unmount()  # a bed left by an interrupted run: never delete through a mount
            shutil.rmtree(self.base)
        self.base.mkdir(parents=True)
        self.base.chmod(0o755)
        os.environ.update(FAKE_CREDENTIALS)
        if self.volume:
            self.volume.create()
        else:
            self.fs.create()
        self.db.install()
        self.moto.start()
        self.s3().create_bucket(Bucket=BUCKET)
        return self

    def s3(self) -> Any:
        return boto3.client("s3", endpoint_url=self.moto.url, region_name="us-east-1")

    def ebs_section(self, volumes: int = 1) -> dict[str, Any]:
        """An EC2 instance with attached data volumes in moto, as `[snapshot.ebs]`."""
        ec2 = boto3.client("ec2", endpoint_url=self.moto.url, region_name="us-east-1")
        image = ec2.describe_images()["Images"][0]["ImageId"]
        inst = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"][0]
        zone = inst["Placement"]["AvailabilityZone"]
        ids = []
        for device in ("/dev/sdf", "/dev/sdg", "/dev/sdh", "/dev/sdi")[:volumes]:
            volume = ec2.create_volume(Size=8, AvailabilityZone=zone)["VolumeId"]
            ec2.attach_volume(VolumeId=volume, InstanceId=inst["InstanceId"], Device=device)
            ids.append(volume)
        return {
            "region": "us-east-1",
            "endpoint_url": self.moto.url,
            "instance_id": inst["InstanceId"],
            "volumes": ids,
        }

    def config(self) -> dict[str, dict[str, Any]]:
        return {
            "daemon": {
                "socket": str(self.base / "run" / "control.sock"),
                "socket_group": "root",
                "state_dir": str(self.base / "state"),
                "spool_dir": str(self.base / "spool"),
            },
            "metrics": {"listen": "127.0.0.1:0"},
            "mysql": {"socket": self.db.socket, "option_file": str(self.db.option_file)},
            "storage": {
                "url": f"s3://{BUCKET}/demo",
                "endpoint_url": self.moto.url,
                "region": "us-east-1",
            },
            "snapshot": {
                "provider": "local",
                "mounts": [str(self.fs.mount_point)],
                "local": {"directory": str(self.snapshot_dir)},
            },
            "restore": {"work_dir": str(self.base / "restore")},
        }

    def write_config(self) -> Path:
        path = self.base / "backupd.toml"
        path.write_text(render_toml(self.config()))
        return path

    def unmount(self) -> None:
        """Data image first, then (reflink bed) the XFS holding it."""
        self.fs.unmount()
        if self.volume:
            self.volume.outer.unmount()

    def destroy_filesystems(self) -> None:
        if self.volume:
            self.volume.destroy()
        else:
            self.fs.destroy()

    def down(self) -> None:
        """Thaw first, then stop by PID, then unmount; each step runs whatever failed before."""
        self.fs.thaw()
        for stop in (self.db.stop, self.moto.stop, self.destroy_filesystems):
            try:
                stop()
            except Exception as exc:  # keep tearing down the rest
                print(f"teardown: {stop.__qualname__} failed: {exc}")
