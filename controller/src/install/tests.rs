//! Tests of install, upgrade and uninstall.
