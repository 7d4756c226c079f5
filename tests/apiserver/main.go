// lb-test-apiserver: a small Kubernetes API server for lb's end-to-end tests.
//
// Debian ships no kube-apiserver binary, but it packages Kubernetes' server library
// (k8s.io/apiserver) as Go source. This program is built on that library: its generic registry,
// etcd3 storage on an embedded etcd, the watch cache, OpenAPI v2/v3 (for kubectl's discovery
// and server-side apply), static token authentication and allow-all authorization. It serves
// what lb's agent and tests use: Services (with status), EndpointSlices, Pods, Nodes and
// Namespaces.
//
// `cargo xtask apiserver` builds it; the `e2e` crate's `ApiServer` guard starts it.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"k8s.io/klog/v2"
)

func main() {
	dataDir := flag.String("data-dir", "", "directory for etcd's data, the serving certificate and the ready file (required)")
	token := flag.String("token", "", "the one bearer token accepted; its user is admin in system:masters (required)")
	compaction := flag.Duration("etcd-compaction-interval", 5*time.Minute,
		"how often the server compacts etcd's history (0 disables it); POST /lbtest/compact compacts at once")
	flag.Parse()
	if *dataDir == "" || *token == "" {
		fmt.Fprintln(os.Stderr, "lb-test-apiserver: --data-dir and --token are required")
		os.Exit(2)
	}
	if err := run(options{
		dataDir:            *dataDir,
		token:              *token,
		compactionInterval: *compaction,
		readyFile:          filepath.Join(*dataDir, "ready"),
	}); err != nil {
		klog.ErrorS(err, "lb-test-apiserver failed")
		os.Exit(1)
	}
}
