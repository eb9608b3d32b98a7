// Command images builds the test cluster's images (podvnet, pause, probe)
// as OCI image layout tarballs, one per image, for `ctr images import`:
//
//	go run ./tests/cluster/cmd/images --out bin/images
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/podvnet/podvnet/tests/cluster/image"
)

func main() {
	out := flag.String("out", "bin/images", "directory for the binaries and the tarballs")
	repo := flag.String("repo", ".", "the podvnet repository")
	version := flag.String("version", "cluster-test", "version stamped into podvnet's binaries and label")
	commit := flag.String("commit", "unknown", "commit stamped into podvnet's binaries")
	flag.Parse()
	paths, err := image.BuildAll(context.Background(), *repo, *out, *version, *commit)
	if err != nil {
		fmt.Fprintln(os.Stderr, "images:", err)
		os.Exit(1)
	}
	for _, p := range paths {
		fmt.Println(p)
	}
}
