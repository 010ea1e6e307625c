// gearbox-logger is the container logger the containerd shim starts for
// every gearbox container (containerd's binary logging). See logger/shimlog.
package main

import (
	"os"

	"github.com/gearboxd/gearbox/logger/shimlog"
)

func main() {
	os.Exit(shimlog.Main(os.Args[1:]))
}
