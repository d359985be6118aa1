//! System tests live in tests/system.
