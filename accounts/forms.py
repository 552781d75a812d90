"""Browser forms: rendering and field-level checks only; rules live in services."""

from __future__ import annotations

from django import forms


class SignupForm(forms.Form):
    username = forms.CharField(
        label="Username", max_length=32, widget=forms.TextInput(attrs={"autocomplete": "username", "autofocus": True})
    )
    display_name = forms.CharField(
        label="Display name", max_length=64, required=False, widget=forms.TextInput(attrs={"autocomplete": "name"})
    )
    password = forms.CharField(
        label="Password", strip=False, widget=forms.PasswordInput(attrs={"autocomplete": "new-password"})
    )


class LoginForm(forms.Form):
    username = forms.CharField(
        label="Username", max_length=150, widget=forms.TextInput(attrs={"autocomplete": "username", "autofocus": True})
    )
    password = forms.CharField(
        label="Password", strip=False, widget=forms.PasswordInput(attrs={"autocomplete": "current-password"})
    )
