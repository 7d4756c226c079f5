package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/request/bearertoken"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizerfactory"
	openapinamer "k8s.io/apiserver/pkg/endpoints/openapi"
	genericrequest "k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/registry/rest"
	genericapiserver "k8s.io/apiserver/pkg/server"
	genericoptions "k8s.io/apiserver/pkg/server/options"
	"k8s.io/apiserver/pkg/storage/storagebackend"
	"k8s.io/apiserver/pkg/util/compatibility"
	restclient "k8s.io/client-go/rest"
	"k8s.io/klog/v2"

	"lbtest/apiserver/openapi"
)

// options are the command line's settings.
type options struct {
	dataDir            string
	token              string
	compactionInterval time.Duration
	readyFile          string
}

// run starts etcd and the API server and serves until SIGTERM or SIGINT.
func run(o options) error {
	if err := os.MkdirAll(o.dataDir, 0o700); err != nil {
		return err
	}
	_ = os.Remove(o.readyFile)
	etcd, etcdURL, err := startEtcd(filepath.Join(o.dataDir, "etcd"))
	if err != nil {
		return fmt.Errorf("starting the embedded etcd: %w", err)
	}
	defer etcd.Close()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	port := ln.Addr().(*net.TCPAddr).Port

	cfg := genericapiserver.NewRecommendedConfig(codecs)
	cfg.EffectiveVersion = compatibility.DefaultBuildEffectiveVersion()

	serving := genericoptions.NewSecureServingOptions()
	serving.BindAddress = net.ParseIP("127.0.0.1")
	serving.BindPort = port
	serving.Listener = ln
	serving.ServerCert.CertDirectory = filepath.Join(o.dataDir, "certs")
	if err := serving.MaybeDefaultWithSelfSignedCerts("localhost", nil, []net.IP{net.ParseIP("127.0.0.1")}); err != nil {
		return err
	}
	if err := serving.WithLoopback().ApplyTo(&cfg.SecureServing, &cfg.LoopbackClientConfig); err != nil {
		return err
	}

	// One static token; its user is in system:masters (authorization allows everything anyway).
	cfg.Authentication.Authenticator = bearertoken.New(authenticator.TokenFunc(
		func(_ context.Context, token string) (*authenticator.Response, bool, error) {
			if token != o.token {
				return nil, false, nil
			}
			return &authenticator.Response{User: &user.DefaultInfo{
				Name: "admin", Groups: []string{user.SystemPrivilegedGroup, user.AllAuthenticated},
			}}, true, nil
		}))
	cfg.Authorization.Authorizer = authorizerfactory.NewAlwaysAllowAuthorizer()
	genericapiserver.AuthorizeClientBearerToken(cfg.LoopbackClientConfig, &cfg.Authentication, &cfg.Authorization)

	etcdOpts := genericoptions.NewEtcdOptions(storagebackend.NewDefaultConfig("/registry",
		codecs.LegacyCodec(corev1.SchemeGroupVersion, discoveryv1.SchemeGroupVersion)))
	etcdOpts.StorageConfig.Transport.ServerList = []string{etcdURL}
	etcdOpts.StorageConfig.CompactionInterval = o.compactionInterval
	if err := etcdOpts.ApplyTo(&cfg.Config); err != nil {
		return err
	}

	namer := openapinamer.NewDefinitionNamer(openAPIScheme)
	cfg.OpenAPIConfig = genericapiserver.DefaultOpenAPIConfig(openapi.GetOpenAPIDefinitions, namer)
	cfg.OpenAPIConfig.Info.Title = "lb-test-apiserver"
	cfg.OpenAPIV3Config = genericapiserver.DefaultOpenAPIV3Config(openapi.GetOpenAPIDefinitions, namer)
	cfg.OpenAPIV3Config.Info.Title = "lb-test-apiserver"

	server, err := cfg.Complete().New("lb-test-apiserver", genericapiserver.NewEmptyDelegate())
	if err != nil {
		return err
	}

	core := genericapiserver.NewDefaultAPIGroupInfo("", scheme, metav1.ParameterCodec, codecs)
	discovery := genericapiserver.NewDefaultAPIGroupInfo(discoveryv1.GroupName, scheme, metav1.ParameterCodec, codecs)
	core.VersionedResourcesStorageMap["v1"] = map[string]rest.Storage{}
	discovery.VersionedResourcesStorageMap["v1"] = map[string]rest.Storage{}
	var namespaces rest.Creater
	for _, res := range resources {
		storages, s, err := newStorage(res, cfg.RESTOptionsGetter)
		if err != nil {
			return fmt.Errorf("%s: %w", res.plural, err)
		}
		target := core.VersionedResourcesStorageMap["v1"]
		if res.group == discoveryv1.GroupName {
			target = discovery.VersionedResourcesStorageMap["v1"]
		}
		for path, st := range storages {
			target[path] = st
		}
		if res.plural == "namespaces" {
			namespaces = s
		}
	}
	if err := server.InstallLegacyAPIGroup(genericapiserver.DefaultLegacyAPIPrefix, &core); err != nil {
		return err
	}
	if err := server.InstallAPIGroup(&discovery); err != nil {
		return err
	}

	client, err := clientv3.New(clientv3.Config{Endpoints: []string{etcdURL}, DialTimeout: 10 * time.Second})
	if err != nil {
		return err
	}
	defer client.Close()
	server.Handler.NonGoRestfulMux.HandleFunc("/lbtest/compact", compactHandler(client))

	server.AddPostStartHookOrDie("lbtest-default-namespaces", func(hook genericapiserver.PostStartHookContext) error {
		return createNamespaces(hook, namespaces)
	})

	ctx := genericapiserver.SetupSignalContext()
	prepared := server.PrepareRun()
	go announceReady(ctx, cfg.LoopbackClientConfig, o.readyFile, port)
	return prepared.RunWithContext(ctx)
}

// startEtcd starts a single-member etcd with its data in dir, on loopback ports it picks.
func startEtcd(dir string) (*embed.Etcd, string, error) {
	client, err := freeLoopbackURL()
	if err != nil {
		return nil, "", err
	}
	peer, err := freeLoopbackURL()
	if err != nil {
		return nil, "", err
	}
	cfg := embed.NewConfig()
	cfg.Dir = dir
	cfg.UnsafeNoFsync = true // test data: speed over durability
	cfg.LogLevel = "error"
	cfg.ListenClientUrls = []url.URL{client}
	cfg.AdvertiseClientUrls = []url.URL{client}
	cfg.ListenPeerUrls = []url.URL{peer}
	cfg.AdvertisePeerUrls = []url.URL{peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	// etcd tells watchers its revision every second even when their keys do not change, so
	// the watch cache's resourceVersion follows writes to other resources and bookmarks
	// carry it (etcd's default is ten minutes).
	cfg.ExperimentalWatchProgressNotifyInterval = time.Second
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, "", err
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(time.Minute):
		e.Close()
		return nil, "", fmt.Errorf("etcd was not ready within a minute")
	}
	return e, client.String(), nil
}

// freeLoopbackURL is an http URL on a loopback port that was free a moment ago (etcd binds
// its own listeners, so the port is released for it to take).
func freeLoopbackURL() (url.URL, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return url.URL{}, err
	}
	defer l.Close()
	return url.URL{Scheme: "http", Host: l.Addr().String()}, nil
}

// compactHandler answers POST /lbtest/compact: it compacts etcd's history up to its current
// revision, so a test can make old resourceVersions expire at once; the answer is
// `{"revision": N}`.
func compactHandler(client *clientv3.Client) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		head, err := client.Get(ctx, "compact-probe", clientv3.WithCountOnly())
		if err == nil {
			_, err = client.Compact(ctx, head.Header.Revision, clientv3.WithCompactPhysical())
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]int64{"revision": head.Header.Revision})
	}
}

// createNamespaces creates `default` and `kube-system`, as a cluster has them.
func createNamespaces(hook genericapiserver.PostStartHookContext, namespaces rest.Creater) error {
	ctx := genericrequest.WithNamespace(hook.Context, "")
	for _, name := range []string{metav1.NamespaceDefault, metav1.NamespaceSystem} {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
		_, err := namespaces.Create(ctx, ns, rest.ValidateAllObjectFunc, &metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating namespace %s: %w", name, err)
		}
	}
	return nil
}

// announceReady waits until /readyz answers ok, then writes the serving port to readyFile
// (written to a temporary name and renamed, so a reader never sees it half written).
func announceReady(ctx context.Context, loopback *restclient.Config, readyFile string, port int) {
	client, err := restclient.UnversionedRESTClientFor(withCodec(loopback))
	if err != nil {
		klog.ErrorS(err, "loopback client")
		return
	}
	for {
		body, err := client.Get().AbsPath("/readyz").DoRaw(ctx)
		if err == nil && string(body) == "ok" {
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
	tmp := readyFile + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(port)+"\n"), 0o600); err != nil {
		klog.ErrorS(err, "writing the ready file")
		return
	}
	if err := os.Rename(tmp, readyFile); err != nil {
		klog.ErrorS(err, "writing the ready file")
		return
	}
	klog.InfoS("ready", "port", port)
}

func withCodec(c *restclient.Config) *restclient.Config {
	c = restclient.CopyConfig(c)
	c.NegotiatedSerializer = codecs.WithoutConversion()
	return c
}
