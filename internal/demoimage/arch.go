package demoimage

import "runtime"

func goarch() string { return runtime.GOARCH }
