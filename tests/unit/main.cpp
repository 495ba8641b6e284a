// The one translation unit that provides Catch2's main(); every other file in
// tests/unit/ only defines test cases.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
