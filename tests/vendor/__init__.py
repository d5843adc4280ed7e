"""Third-party code the tests run as it is; each folder says where it came from and under which licence."""
