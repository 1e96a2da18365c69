"""paramiko's SFTPClient (an SFTP client nobody here wrote) through the sftp subsystem of
alknet/ssh, with `alknet connect` as its ProxyCommand.

usage: paramiko_sftp.py ALKNET FINGERPRINT HOST:PORT KEYFILE LOCALDIR
Prints "ok" and exits 0 when every check passed; the Rust test then checks the disk."""

import hashlib
import os
import stat
import sys

import paramiko


def main():
    alknet, fingerprint, addr, keyfile, local = sys.argv[1:6]
    proxy = paramiko.ProxyCommand(
        f"{alknet} connect --alpn alknet/ssh --fingerprint {fingerprint} {addr}"
    )
    transport = paramiko.Transport(proxy)
    transport.connect(username="user", pkey=paramiko.Ed25519Key.from_private_key_file(keyfile))
    sftp = paramiko.SFTPClient.from_transport(transport)

    # 8 MiB both ways, paramiko's own pipelining (prefetch on get)
    data = os.urandom(8 << 20)
    src = os.path.join(local, "pm-src")
    with open(src, "wb") as f:
        f.write(data)
    sftp.put(src, "/pm-big")
    back = os.path.join(local, "pm-back")
    sftp.get("/pm-big", back)
    with open(back, "rb") as f:
        assert hashlib.sha256(f.read()).digest() == hashlib.sha256(data).digest()
    assert sftp.stat("/pm-big").st_size == len(data)

    # the everyday calls
    sftp.mkdir("/pm-dir", 0o750)
    sftp.rename("/pm-big", "/pm-dir/big")
    sftp.posix_rename("/pm-dir/big", "/pm-dir/big2")
    sftp.symlink("/pm-dir/big2", "/pm-dir/link")
    assert sftp.readlink("/pm-dir/link") == "/pm-dir/big2"
    assert stat.S_ISLNK(sftp.lstat("/pm-dir/link").st_mode)
    sftp.chmod("/pm-dir/big2", 0o600)
    assert stat.S_IMODE(sftp.stat("/pm-dir/big2").st_mode) == 0o600
    sftp.utime("/pm-dir/big2", (1000000, 2000000))
    assert sftp.stat("/pm-dir/big2").st_mtime == 2000000
    names = sorted(a.filename for a in sftp.listdir_attr("/pm-dir"))
    assert names == ["big2", "link"], names
    assert sftp.normalize("/pm-dir/../pm-dir/.") == "/pm-dir"
    with sftp.open("/pm-dir/small", "w") as f:
        f.write(b"hello")
    with sftp.open("/pm-dir/small", "a") as f:
        f.write(b" world")
    with sftp.open("/pm-dir/small", "r") as f:
        assert f.read() == b"hello world"

    # escapes: refused, or contained in the root
    for path in ["../../etc/passwd", "/../../../etc/passwd"]:
        try:
            sftp.open(path, "r")
            raise AssertionError(f"{path} opened")
        except IOError:
            pass
    assert sftp.normalize("/../..") == "/"
    sftp.symlink("/", "/pm-up")
    try:
        sftp.open("/pm-up/etc/passwd", "r")
        raise AssertionError("followed a symlink out")
    except IOError:
        pass
    sftp.rename("/pm-dir/small", "../../pm-out")

    sftp.remove("/pm-dir/link")
    sftp.remove("/pm-dir/big2")
    sftp.rmdir("/pm-dir")
    sftp.close()
    transport.close()
    print("ok")


if __name__ == "__main__":
    main()
