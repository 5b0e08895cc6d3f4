#!/usr/bin/python3
"""Reads the applet's window as a screen reader does, through AT-SPI.

The test drives it with one JSON command per line on stdin and reads one
JSON answer per line on stdout:

  {"cmd": "wait-row", "timeout": 60, "cells": {"0": "dancer", "2": "1234"}}
      waits until a row of the service list has these texts in these
      columns (0 is the name); answers the rows seen.
  {"cmd": "wait-name", "timeout": 60, "contains": "adoptd is not running"}
      waits until an object of the window (the window itself included) has
      a name that holds the text.
  {"cmd": "click", "timeout": 60, "name": "Stop"}
      waits until a sensitive button of that name is there, and clicks it.
  {"cmd": "serve-notifications"}
      owns org.freedesktop.Notifications on the session bus and keeps the
      summaries of the notifications it is sent.
  {"cmd": "wait-notification", "timeout": 60, "summary": "crasher failed"}
      waits until a notification with that summary has come.
  {"cmd": "serve-watcher"}
      owns org.kde.StatusNotifierWatcher on the session bus (anew if it
      already does: the name goes and comes back) and keeps the items
      registered with it.
  {"cmd": "wait-registered", "timeout": 60, "count": 2}
      waits until that many registrations have come; answers them.
  {"cmd": "wait-tray", "timeout": 60, "item": "org.kde.…",
   "expect": {"Status": "Passive", "ToolTip": "1 running", "menu": [...]}}
      waits until the tray item's properties (ToolTip: its text) and its
      menu's labels ("-" a separator) are these; answers what it read,
      the menu's ids too; with "signals": [...], until the item has sent
      at least these signals since it registered.
  {"cmd": "tray-call", "item": "org.kde.…", "path": "/MenuBar",
   "interface": "…", "method": "Event", "signature": "(isvu)", "args": [...]}
      calls a method of the tray item (a "v" argument is given as a
      string).
  {"cmd": "shot", "path": "/…/x.png"}   a screenshot of the display.
  {"cmd": "quit"}

A wait re-reads the tree on each AT-SPI event and at least once a second
until the deadline: GTK 4.8 tells no event when a label's text changes,
so the tick is what notices a new main PID.
"""

import json
import sys
import time

import pyatspi
from gi.repository import Gio, GLib

APPLICATION = "adoptd-applet"
EVENTS = [
    "object:property-change:accessible-name",
    "object:children-changed",
    "object:state-changed",
    "object:text-changed",
    "window:create",
]


def walk(accessible):
    yield accessible
    try:
        count = accessible.childCount
    except Exception:
        return
    for index in range(count):
        try:
            child = accessible.getChildAtIndex(index)
        except Exception:
            continue
        if child is not None:
            yield from walk(child)


def applications():
    desktop = pyatspi.Registry.getDesktop(0)
    for index in range(desktop.childCount):
        try:
            application = desktop.getChildAtIndex(index)
            if application is not None and application.name == APPLICATION:
                yield application
        except Exception:
            continue


def objects():
    for application in applications():
        yield from walk(application)


def first_label(accessible):
    for inner in walk(accessible):
        try:
            if inner.getRoleName() == "label":
                return inner.name
        except Exception:
            continue
    return ""


def rows():
    """Every row of the service list, as the texts of its cells."""
    found = []
    for accessible in objects():
        try:
            if accessible.getRoleName() != "table row":
                continue
            cells = [
                accessible.getChildAtIndex(i) for i in range(accessible.childCount)
            ]
            if not cells or cells[0] is None or cells[0].getRoleName() != "table cell":
                continue
            found.append([first_label(cell) for cell in cells if cell is not None])
        except Exception:
            continue
    return found


def names():
    seen = []
    for accessible in objects():
        try:
            seen.append(accessible.name)
        except Exception:
            continue
    return seen


def wait(timeout, check):
    """Runs GLib's loop, re-checking on each AT-SPI event, until check()
    gives something or the deadline passes."""
    result = check()
    if result is not None:
        return result
    deadline = time.monotonic() + timeout
    loop = GLib.MainLoop()
    found = []

    def recheck(*_):
        value = check()
        if value is not None:
            found.append(value)
            loop.quit()
            return False
        if time.monotonic() >= deadline:
            loop.quit()
            return False
        return True

    def on_event(_event):
        recheck()

    pyatspi.Registry.registerEventListener(on_event, *EVENTS)
    GLib.timeout_add(1000, recheck)
    loop.run()
    pyatspi.Registry.deregisterEventListener(on_event, *EVENTS)
    return found[0] if found else None


def matches(row, cells):
    for column, text in cells.items():
        index = int(column)
        if index >= len(row):
            return False
        if row[index] != text and not row[index].startswith(text + " "):
            return False
    return True


def wait_row(command):
    cells = command["cells"]

    def check():
        for row in rows():
            if matches(row, cells):
                return row
        return None

    row = wait(command["timeout"], check)
    if row is None:
        return {"ok": False, "rows": rows()}
    return {"ok": True, "row": row}


def wait_name(command):
    text = command["contains"]

    def check():
        for name in names():
            if name and text in name:
                return name
        return None

    name = wait(command["timeout"], check)
    if name is None:
        return {"ok": False, "names": names()}
    return {"ok": True, "name": name}


def click(command):
    wanted = command["name"]

    def check():
        for accessible in objects():
            try:
                if (
                    accessible.getRoleName() == "push button"
                    and accessible.name == wanted
                    and accessible.getState().contains(pyatspi.STATE_SENSITIVE)
                ):
                    return accessible
            except Exception:
                continue
        return None

    button = wait(command["timeout"], check)
    if button is None:
        return {"ok": False, "names": names()}
    button.queryAction().doAction(0)
    return {"ok": True}


NOTIFICATIONS = """<node>
  <interface name="org.freedesktop.Notifications">
    <method name="Notify">
      <arg type="s" direction="in"/><arg type="u" direction="in"/>
      <arg type="s" direction="in"/><arg type="s" direction="in"/>
      <arg type="s" direction="in"/><arg type="as" direction="in"/>
      <arg type="a{sv}" direction="in"/><arg type="i" direction="in"/>
      <arg type="u" direction="out"/>
    </method>
    <method name="CloseNotification"><arg type="u" direction="in"/></method>
    <method name="GetCapabilities"><arg type="as" direction="out"/></method>
    <method name="GetServerInformation">
      <arg type="s" direction="out"/><arg type="s" direction="out"/>
      <arg type="s" direction="out"/><arg type="s" direction="out"/>
    </method>
  </interface>
</node>"""
SUMMARIES = []
SERVED = []


def serve_notifications(_command):
    bus = Gio.bus_get_sync(Gio.BusType.SESSION, None)
    interface = Gio.DBusNodeInfo.new_for_xml(NOTIFICATIONS).interfaces[0]

    def on_call(_connection, _sender, _path, _interface, method, parameters, invocation):
        if method == "Notify":
            SUMMARIES.append(parameters.unpack()[3])
            invocation.return_value(GLib.Variant("(u)", (len(SUMMARIES),)))
        elif method == "GetCapabilities":
            invocation.return_value(GLib.Variant("(as)", (["body"],)))
        elif method == "GetServerInformation":
            invocation.return_value(GLib.Variant("(ssss)", ("test", "adoptd", "1", "1.2")))
        else:
            invocation.return_value(None)

    bus.register_object("/org/freedesktop/Notifications", interface, on_call, None, None)
    reply = bus.call_sync(
        "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
        "RequestName", GLib.Variant("(su)", ("org.freedesktop.Notifications", 4)),
        GLib.VariantType.new("(u)"), Gio.DBusCallFlags.NONE, -1, None,
    )
    SERVED.append(bus)
    return {"ok": reply.unpack()[0] == 1}


def wait_notification(command):
    summary = command["summary"]

    def check():
        return summary if summary in SUMMARIES else None

    found = wait(command["timeout"], check)
    return {"ok": found is not None, "summaries": SUMMARIES}


WATCHER = """<node>
  <interface name="org.kde.StatusNotifierWatcher">
    <method name="RegisterStatusNotifierItem"><arg type="s" direction="in"/></method>
    <method name="RegisterStatusNotifierHost"><arg type="s" direction="in"/></method>
    <property name="RegisteredStatusNotifierItems" type="as" access="read"/>
    <property name="IsStatusNotifierHostRegistered" type="b" access="read"/>
    <property name="ProtocolVersion" type="i" access="read"/>
  </interface>
</node>"""
REGISTERED = []
WATCHING = []
# The names of the signals each registered item sent since it registered.
SIGNALS = {}


def session_call(bus, destination, path, interface, method, parameters, reply_type):
    return bus.call_sync(
        destination, path, interface, method, parameters,
        GLib.VariantType.new(reply_type) if reply_type else None,
        Gio.DBusCallFlags.NONE, 10000, None,
    )


def serve_watcher(_command):
    bus = Gio.bus_get_sync(Gio.BusType.SESSION, None)
    if not WATCHING:
        interface = Gio.DBusNodeInfo.new_for_xml(WATCHER).interfaces[0]

        def on_call(connection, sender, _path, _interface, method, parameters, invocation):
            if method == "RegisterStatusNotifierItem":
                service = parameters.unpack()[0]
                REGISTERED.append({"sender": sender, "service": service})
                if service not in SIGNALS:
                    SIGNALS[service] = []
                    connection.signal_subscribe(
                        sender, None, None, None, None, Gio.DBusSignalFlags.NONE,
                        lambda *signal: SIGNALS[service].append(signal[4]),
                    )
            invocation.return_value(None)

        def on_get(_connection, _sender, _path, _interface, name):
            if name == "RegisteredStatusNotifierItems":
                return GLib.Variant("as", [r["service"] for r in REGISTERED])
            if name == "IsStatusNotifierHostRegistered":
                return GLib.Variant("b", True)
            return GLib.Variant("i", 0)

        bus.register_object("/StatusNotifierWatcher", interface, on_call, on_get, None)
        WATCHING.append(bus)
    else:
        session_call(
            bus, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
            "ReleaseName", GLib.Variant("(s)", ("org.kde.StatusNotifierWatcher",)), "(u)",
        )
    reply = session_call(
        bus, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
        "RequestName", GLib.Variant("(su)", ("org.kde.StatusNotifierWatcher", 4)), "(u)",
    )
    return {"ok": reply.unpack()[0] == 1}


def wait_registered(command):
    count = command["count"]
    found = wait(command["timeout"], lambda: list(REGISTERED) if len(REGISTERED) >= count else None)
    return {"ok": found is not None, "registered": REGISTERED}


def read_tray(item):
    bus = Gio.bus_get_sync(Gio.BusType.SESSION, None)
    properties = session_call(
        bus, item, "/StatusNotifierItem", "org.freedesktop.DBus.Properties", "GetAll",
        GLib.Variant("(s)", ("org.kde.StatusNotifierItem",)), "(a{sv})",
    ).unpack()[0]
    menu_path = properties.get("Menu", "/MenuBar")
    _, layout = session_call(
        bus, item, menu_path, "com.canonical.dbusmenu", "GetLayout",
        GLib.Variant("(iias)", (0, -1, [])), "(u(ia{sv}av))",
    ).unpack()
    menu = []
    ids = []
    for child in layout[2]:
        child_id, child_properties, _ = child
        if child_properties.get("type") == "separator":
            menu.append("-")
        else:
            menu.append(child_properties.get("label", ""))
        ids.append(child_id)
    read = {key: properties[key] for key in properties if key != "IconPixmap"}
    tooltip = properties.get("ToolTip")
    read["ToolTip"] = tooltip[3] if tooltip else None
    read["menu"] = menu
    read["ids"] = ids
    return read


def wait_tray(command):
    expect = command["expect"]
    last = []

    def check():
        try:
            read = read_tray(command["item"])
        except Exception as error:
            last[:] = [{"error": repr(error)}]
            return None
        read["signals"] = sorted(set(SIGNALS.get(command["item"], [])))
        last[:] = [read]
        if all(read.get(key) == value for key, value in expect.items()) and all(
            name in read["signals"] for name in command.get("signals", [])
        ):
            return read
        return None

    read = wait(command["timeout"], check)
    if read is None:
        return {"ok": False, "read": last[0] if last else None}
    return {"ok": True, "read": read}


def tray_call(command):
    bus = Gio.bus_get_sync(Gio.BusType.SESSION, None)
    signature = command["signature"]
    args = [
        GLib.Variant("s", arg) if kind == "v" else arg
        for kind, arg in zip(signature.strip("()"), command["args"])
    ]
    session_call(
        bus, command["item"], command["path"], command["interface"], command["method"],
        GLib.Variant(signature, tuple(args)), None,
    )
    return {"ok": True}


def shot(command):
    from PIL import ImageGrab

    image = ImageGrab.grab(xdisplay=command["display"])
    # Without a window manager the window sits at the top left of a black
    # screen: keep the window alone.
    box = image.convert("L").point(lambda level: 255 if level else 0).getbbox()
    if box:
        image = image.crop(box)
    image.save(command["path"])
    return {"ok": True}


def main():
    handlers = {
        "wait-row": wait_row,
        "wait-name": wait_name,
        "click": click,
        "shot": shot,
        "serve-notifications": serve_notifications,
        "wait-notification": wait_notification,
        "serve-watcher": serve_watcher,
        "wait-registered": wait_registered,
        "wait-tray": wait_tray,
        "tray-call": tray_call,
    }
    print(json.dumps({"ok": True, "ready": True}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        if command["cmd"] == "quit":
            break
        try:
            answer = handlers[command["cmd"]](command)
        except Exception as error:  # the test says what went wrong
            answer = {"ok": False, "error": repr(error)}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
