"""Headless Chromium driven by Playwright, and Airflow's connections page used the way a person uses it."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from playwright.sync_api import Locator, Page, expect, sync_playwright

CHROMIUM = os.environ.get("DATAWORKS_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
# Wide enough for the connection dialog's two columns; the form screenshots grow it to fit the dialog.
VIEWPORT = {"width": 1280, "height": 900}
# Every wait has a bound; the connection test itself gets its own, longer one.
ACTION_TIMEOUT_MS = 20_000
PAGE_LOAD_TIMEOUT_MS = 45_000

STANDARD_FIELD_LABELS = {
    "description": "Description",
    "host": "Host",
    "port": "Port",
    "login": "Login",
    "password": "Password",
    "schema": "Schema",
}

_TEST_TITLES = re.compile(r"^\s*Test Connection (Successful|Failed)\s*$")


@contextmanager
def chromium_page(*, user_data_dir: Path) -> Iterator[Page]:
    """
    Start Debian's Chromium headless with a fresh profile and yield one page; close everything after.

    :param user_data_dir: an empty folder for the browser profile.
    :raises FileNotFoundError: Chromium is not installed (``make browser`` installs it).
    """
    if shutil.which(CHROMIUM) is None:
        raise FileNotFoundError(f"{CHROMIUM} not found: run `make browser` (apt-get install chromium)")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(user_data_dir),
            executable_path=CHROMIUM,
            headless=True,
            args=list(CHROMIUM_ARGS),
            viewport=VIEWPORT,
            timeout=PAGE_LOAD_TIMEOUT_MS,
        )
        try:
            context.set_default_timeout(ACTION_TIMEOUT_MS)
            context.set_default_navigation_timeout(PAGE_LOAD_TIMEOUT_MS)
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()


@dataclass(frozen=True)
class ConnectionTestResult:
    """What the toast after pressing Test Connection says."""

    title: str
    message: str

    @property
    def succeeded(self) -> bool:
        """Whether Airflow reported the test as successful."""
        return self.title == "Test Connection Successful"


class ConnectionsPage:
    """
    Airflow 3.3's Admin > Connections page.

    :param page: the browser page.
    :param base_url: the api-server's address.
    :param artifacts: folder for screenshots.
    """

    def __init__(self, page: Page, *, base_url: str, artifacts: Path) -> None:
        self.page = page
        self.base_url = base_url
        self.artifacts = artifacts

    def open(self) -> ConnectionsPage:
        """Load the page and wait until the Add Connection button is there."""
        self.page.goto(f"{self.base_url}/connections")
        self.page.get_by_role("button", name="Add Connection").wait_for()
        return self

    def add(self, *, connection_id: str, connection_type: str) -> ConnectionForm:
        """Open the Add Connection dialog, type the id and pick the type by its display name."""
        self.page.get_by_role("button", name="Add Connection").click()
        form = ConnectionForm(self.page)
        form.dialog.locator("input[name=connection_id]").fill(connection_id)
        form.dialog.get_by_role("combobox", name="Connection Type").fill(connection_type)
        self.page.get_by_role("option", name=connection_type, exact=True).click()
        form.section("Standard Fields").wait_for()
        return form

    def edit(self, connection_id: str) -> ConnectionForm:
        """Open the Edit Connection dialog of a listed connection."""
        self.row(connection_id).get_by_role("button", name="Edit Connection").click()
        form = ConnectionForm(self.page)
        form.dialog.wait_for()
        return form

    def row(self, connection_id: str) -> Locator:
        """The table row of a connection."""
        cell = self.page.get_by_role("cell", name=connection_id, exact=True)
        return self.page.get_by_role("row").filter(has=cell)

    def test(self, connection_id: str, *, timeout_ms: int = 60_000) -> ConnectionTestResult:
        """Press the row's Test Connection button and read the toast that answers."""
        toast = self.page.locator("[data-scope=toast][data-part=root]").filter(
            has=self.page.locator("[data-part=title]", has_text=_TEST_TITLES)
        )
        # A toast of an earlier test goes away by itself within seconds; wait for that so the one
        # read below is this test's answer.
        toast.first.wait_for(state="hidden")
        self.row(connection_id).get_by_role("button", name="Test Connection").click()
        toast = toast.first
        toast.wait_for(timeout=timeout_ms)
        # Let the toast finish fading in, so that a screenshot shows it as a person reads it.
        expect(toast).to_have_css("opacity", "1")
        return ConnectionTestResult(
            title=toast.locator("[data-part=title]").inner_text().strip(),
            message=toast.locator("[data-part=description]").inner_text().strip(),
        )

    def screenshot(self, name: str, *, fit_dialog: bool = False) -> Path:
        """
        Save a PNG of what the browser shows under ``artifacts``.

        :param fit_dialog: make the window tall enough for the whole open dialog first (the dialog
            otherwise scrolls inside the window and the shot shows only part of the form).
        """
        self.artifacts.mkdir(parents=True, exist_ok=True)
        path = self.artifacts / f"{name}.png"
        if not fit_dialog:
            self.page.screenshot(path=str(path))
            return path
        dialog = self.page.get_by_role("dialog")
        height = int(dialog.evaluate("element => element.scrollHeight")) + 160
        self.page.set_viewport_size({"width": VIEWPORT["width"], "height": max(height, VIEWPORT["height"])})
        try:
            self.page.screenshot(path=str(path))
        finally:
            self.page.set_viewport_size(VIEWPORT)
        return path


class ConnectionForm:
    """The Add/Edit Connection dialog, addressed by the labels a person reads."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.dialog = page.get_by_role("dialog")

    def section(self, title: str) -> Locator:
        """The accordion section (``Standard Fields``, ``Extra Fields``); opened if closed."""
        trigger = self.dialog.get_by_role("button", name=title, exact=True)
        if trigger.get_attribute("aria-expanded") != "true":
            trigger.click()
        # The region's aria-labelledby holds an id with a space in it, so the region has no usable
        # accessible name; the trigger's aria-controls names it exactly.
        content_id = trigger.get_attribute("aria-controls")
        return self.dialog.locator(f'[id="{content_id}"]')

    def labels(self, section: str) -> list[str]:
        """The field labels shown in a section, top to bottom, without the required-field star."""
        labels = self.section(section).locator("label[data-scope=field][data-part=label]")
        labels.first.wait_for()
        texts = labels.all_inner_texts()
        return [text.replace("*", "").strip() for text in texts]

    def field(self, label: str) -> Locator:
        """The group holding the label, the input and the help text of one field."""
        exact_label = re.compile(rf"^\s*{re.escape(label)}\s*\*?\s*$")
        label_element = self.page.locator("label[data-scope=field][data-part=label]", has_text=exact_label)
        return self.dialog.locator("[data-scope=field][data-part=root]").filter(has=label_element)

    def help_text(self, label: str) -> str:
        """The help text shown under a field ('' when there is none)."""
        helper = self.field(label).locator("[data-part=helper-text]")
        return helper.inner_text().strip() if helper.count() else ""

    def text_input(self, label: str) -> Locator:
        """The text box (input or textarea) of a field."""
        return self.field(label).locator("input:not([type=hidden]):not([type=checkbox]), textarea").first

    def fill(self, label: str, value: str) -> None:
        """Replace the text of a text field."""
        self.text_input(label).fill(value)

    def choose(self, label: str, option: str) -> None:
        """Pick ``option`` in a drop-down field."""
        self.field(label).get_by_role("combobox").fill(option)
        self.page.get_by_role("option", name=option, exact=True).click()

    def chosen(self, label: str) -> str:
        """The option shown as picked in a drop-down field."""
        return self.field(label).locator("input[type=hidden]").first.input_value()

    def switch(self, label: str, on: bool) -> None:
        """Turn a switch field on or off."""
        checkbox = self.field(label).locator("input[type=checkbox]")
        if checkbox.is_checked() != on:
            self.field(label).locator("label[data-scope=switch]").click()

    def save(self) -> None:
        """Press Save and wait until the dialog has closed."""
        self.dialog.get_by_role("button", name="Save").click()
        self.dialog.wait_for(state="hidden")
