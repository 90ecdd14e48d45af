#!/usr/bin/env python3
"""An OSDP reader (PD) the project did not write, for the agent's tests: LibOSDP's own Python
package (PyPI `libosdp`) in the PD role, on the master side of a pseudo-terminal whose slave is
linked at --link (the agent's `port`).

stdin takes JSON lines:
  {"op": "card", "bits": "0101..."}    a card read (Wiegand bits, parity included)
  {"op": "keys", "keys": "1234#"}       key presses (* and # as OSDP sends them)
  {"op": "tamper", "on": true}          the tamper switch (osdp_LSTATR)
  {"op": "power", "on": false}          cut power (answers nothing) / restore it (fresh start)
  {"op": "quit"}
stdout gets JSON lines: {"ready": slave}, {"command": ...} for every command the control panel
sends (LED, buzzer, keyset), {"sc_active": bool} and {"online": bool} on changes.
"""

import argparse
import json
import os
import sys
import threading
import time
import tty

import osdp

OUT = threading.Lock()


def emit(**fields):
    with OUT:
        sys.stdout.write(json.dumps(fields) + "\n")
        sys.stdout.flush()


class PtyChannel(osdp.Channel):
    def __init__(self, fd):
        super().__init__()
        self.fd = fd

    def read(self, max_bytes):
        try:
            return os.read(self.fd, max_bytes)
        except (BlockingIOError, OSError):
            return b""

    def write(self, buf):
        try:
            return os.write(self.fd, buf)
        except (BlockingIOError, OSError):
            return 0

    def flush(self):
        pass


class Reader:
    def __init__(self, args, master):
        self.args = args
        self.master = master
        self.key = bytes.fromhex(args.key) if args.key else None
        self.pd = None
        self.powered = False

    def on_command(self, command):
        kind = command.get("command")
        if kind == osdp.Command.LED:
            emit(command={"led": command})
        elif kind == osdp.Command.Buzzer:
            emit(command={"buzzer": command})
        elif kind == osdp.Command.Keyset:
            # Kept like a reader keeps it in flash; reported so the test can compare it with
            # the key file the agent wrote.
            self.key = bytes(command["data"])
            emit(command={"keyset": self.key.hex()})
        else:
            emit(command={"other": kind})
        return 0, None

    def power_on(self):
        flags = [] if self.key else [osdp.LibFlag.InstallMode]
        info = osdp.PDInfo(self.args.address, PtyChannel(self.master), scbk=self.key,
                           name="test-reader", flags=flags)
        caps = osdp.PDCapabilities([
            (osdp.Capability.CommunicationSecurity, 1, 1),
            (osdp.Capability.LEDControl, 1, 1),
            (osdp.Capability.AudibleControl, 1, 1),
            (osdp.Capability.CardDataFormat, 1, 1),
            (osdp.Capability.Readers, 1, 1),
        ])
        self.pd = osdp.PeripheralDevice(info, caps, log_level=osdp.LogLevel.Warning,
                                        command_handler=self.on_command)
        self.pd.start()
        self.powered = True

    def power_off(self):
        if self.pd:
            self.pd.teardown()
            self.pd = None
        self.powered = False

    def submit(self, event):
        if self.pd:
            self.pd.submit_event(event)


def watch(reader):
    """Reports link changes; drains the wire while the reader is unpowered."""
    last = (None, None)
    while True:
        if reader.powered and reader.pd:
            now = (reader.pd.is_sc_active(), reader.pd.is_online())
            if now[0] != last[0]:
                emit(sc_active=now[0])
            if now[1] != last[1]:
                emit(online=now[1])
            last = now
        else:
            try:
                os.read(reader.master, 4096)
            except (BlockingIOError, OSError):
                pass
            last = (None, None)
        time.sleep(0.02)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--link", required=True, help="symlink to create for the pty slave")
    parser.add_argument("--address", type=int, default=0)
    parser.add_argument("--key", help="the reader's SCBK (32 hex digits); none: install mode")
    args = parser.parse_args()

    master, slave = os.openpty()
    tty.setraw(slave)  # the agent sets raw mode too; this covers bytes before it opens
    os.set_blocking(master, False)
    slave_path = os.ttyname(slave)
    temp_link = args.link + ".tmp"
    if os.path.lexists(temp_link):
        os.unlink(temp_link)
    os.symlink(slave_path, temp_link)
    os.replace(temp_link, args.link)

    reader = Reader(args, master)
    reader.power_on()
    threading.Thread(target=watch, args=(reader,), daemon=True).start()
    emit(ready=slave_path)

    for line in sys.stdin:
        request = json.loads(line)
        op = request["op"]
        if op == "card":
            bits = request["bits"]
            # left-align: the first bit goes in the high bit of the first byte
            pad = (8 - len(bits) % 8) % 8
            data = (int(bits, 2) << pad).to_bytes((len(bits) + 7) // 8, "big")
            reader.submit({"event": osdp.Event.CardRead, "reader_no": 0,
                           "format": osdp.CardFormat.Wiegand, "direction": 0,
                           "length": len(bits), "data": data})
        elif op == "keys":
            data = bytes(0x7F if c == "*" else 0x0D if c == "#" else ord(c)
                         for c in request["keys"])
            reader.submit({"event": osdp.Event.KeyPress, "reader_no": 0, "data": data})
        elif op == "tamper":
            reader.submit({"event": osdp.Event.Status, "type": osdp.StatusReportType.Local,
                           "report": bytes([1 if request["on"] else 0, 0])})
        elif op == "power":
            if request["on"] and not reader.powered:
                reader.power_on()
            elif not request["on"] and reader.powered:
                reader.power_off()
            emit(powered=reader.powered)
        elif op == "quit":
            break
    reader.power_off()
    os.unlink(args.link)


if __name__ == "__main__":
    main()
