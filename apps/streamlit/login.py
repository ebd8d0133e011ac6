"""The dashboard's login: streamlit-authenticator against the operators file.

Nothing of the dashboard renders until :func:`signed_in` returns a user. The library
gets the file's credentials as a mapping, not the file's path: given a path it rewrites
the file in place (not atomically, not under our lock) on every login to keep its own
counters, and the CLI owns that file. The re-login cookie is signed with a random key
kept next to the users file (mode 0600, :meth:`UsersFile.cookie_key`); ``shelflife users
remove`` and ``add --reset`` replace that key, which signs every browser out. A session
that is already open is checked against the file each time the whole page runs (the live
fragment's own reruns skip this) and at each decision (:func:`decider`), so a removed user
or a changed password ends it.
"""

from __future__ import annotations

import time
import types

import extra_streamlit_components as stx
import jwt
import streamlit as st
import streamlit_authenticator as stauth
from extra_streamlit_components.CookieManager import _component_func as cookie_component
from streamlit_authenticator.models import cookie_model
from streamlit_authenticator.utilities import LoginError

from apps.auth.exceptions import AuthError, NotPermitted
from apps.auth.users import User, UsersFile

COOKIE_NAME = "shelflife_login"
COOKIE_EXPIRY_DAYS = 1.0
"""A browser stays logged in for a day (a shift and then some), then asks again."""
NO_USERS = "No users yet: run `shelflife users add NAME` on the dashboard's host, then reload."
REFUSED = "Login refused: unknown user or wrong password."
FORM = {"Form name": "Shelflife — sign in", "Username": "User", "Password": "Password",
        "Login": "Sign in"}
_FINGERPRINT = "shelflife_password_hash"
LOGIN_SLEEP_S = 0.0
"""The library sleeps 0.7 s by default before every not-yet-signed-in run, a wait from
when it fetched the cookie through a browser component; it now reads the cookie from
the request (``st.context.cookies``), so the sleep only delayed every page a visitor
opened. Guessing passwords stays slow: each try is a bcrypt check."""


class _RequestCookies(stx.CookieManager):
    """The library's cookie manager without its ``getAll`` component.

    The library builds a cookie manager on every run, and that manager renders a browser
    component that reads every cookie and sends them back, which reruns the whole page.
    The library reads the cookie from the request instead (``st.context.cookies``), so
    the answer served nothing: it made every page a visitor opened run twice, the second
    time about 0.8 s later, before its data showed. Setting and deleting the cookie still
    go through the component (they must reach the browser)."""

    def __init__(self, key: str = "init") -> None:  # noqa: ARG002 - the library's signature
        self.cookie_manager = cookie_component
        self.cookies = dict(st.context.cookies)


cookie_model.stx = types.SimpleNamespace(CookieManager=_RequestCookies)


def _sign_out(auth: stauth.Authenticate, why: str) -> None:
    """End the session and delete the browser's cookie. No ``st.rerun()`` here: the
    cookie is deleted by a component in this run's output, which a rerun would drop; the
    component's answer brings the next run, with the login form."""
    auth.logout(location="unrendered")
    st.session_state.pop(_FINGERPRINT, None)
    st.warning(why)


def remembered(users: UsersFile) -> bool:
    """Whether this visit will be signed in by its re-login cookie: the same checks the
    library makes (signature, expiry, a user the file still has), made before the page
    list is declared, so a returning visitor gets the sidebar's pages on the first run
    instead of after a second one."""
    token = st.context.cookies.get(COOKIE_NAME)
    if not token or st.session_state.get("logout"):
        return False
    try:
        everyone = users.users()
        if not everyone:  # nobody to sign in as (and no key to make for nobody)
            return False
        claims = jwt.decode(token, users.cookie_key(), algorithms=["HS256"])
        return (float(claims.get("exp_date", 0)) > time.time()
                and claims.get("username") in everyone)
    except (jwt.InvalidTokenError, AuthError, TypeError, ValueError):
        return False


def signed_in(users: UsersFile) -> User | None:
    """The logged-in operator, or None after rendering only the login form (or the
    "no users yet" message, or why the file cannot be read)."""
    try:
        everyone = users.users()
    except AuthError as exc:
        st.error(f"The users file {users.path} cannot be read: {exc}")
        return None
    if not everyone:
        st.info(NO_USERS)
        return None
    auth = stauth.Authenticate(users.credentials(), COOKIE_NAME, users.cookie_key(),
                               COOKIE_EXPIRY_DAYS, auto_hash=False,
                               login_sleep_time=LOGIN_SLEEP_S)
    try:
        auth.login(fields=FORM, key="login")
    except LoginError:  # a cookie for a user who has since been removed
        _sign_out(auth, "That login is no longer valid; please sign in again.")
        return None
    status = st.session_state.get("authentication_status")
    if status is False:
        st.error(REFUSED)
    if not status:
        return None
    user = everyone.get(st.session_state.get("username"))
    seen = st.session_state.setdefault(_FINGERPRINT, user.password_hash if user else None)
    if user is None or seen != user.password_hash:
        _sign_out(auth, "Your user was removed or its password changed; please sign in again.")
        return None
    with st.sidebar:
        st.markdown(f"Signed in as **{user.name}** ({user.role})")
        auth.logout("Log out", location="sidebar", key="shelflife_logout")
    if not st.session_state.get("authentication_status"):  # "Log out" was just pressed
        st.session_state.pop(_FINGERPRINT, None)
        st.info("Signed out.")
        return None
    return user


def decider(users: UsersFile, user: User, action: str) -> User:
    """``user`` as the file says now, if it may still ``action`` (the role may have changed
    since the login); :class:`AuthError` otherwise."""
    current = users.users().get(user.name)
    if current is None or current.password_hash != user.password_hash:
        raise NotPermitted(f"{user.name} was removed or its password changed; sign in again")
    return current.require_decider(action)
