package main

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
)

// The server's scheme. Kubernetes' own server converts every request to an internal version
// of its types; this one has no internal types of its own, so the v1 Go types are registered
// as the internal version too, and the scheme's conversion between them is the identity.
var (
	scheme = runtime.NewScheme()
	codecs = serializer.NewCodecFactory(scheme)
	// openAPIScheme holds the external types only: it names the OpenAPI definitions.
	openAPIScheme = runtime.NewScheme()
)

func init() {
	for _, s := range []*runtime.Scheme{scheme, openAPIScheme} {
		utilruntime.Must(corev1.AddToScheme(s))
		utilruntime.Must(discoveryv1.AddToScheme(s))
	}
	scheme.AddKnownTypes(schema.GroupVersion{Group: "", Version: runtime.APIVersionInternal},
		&corev1.Service{}, &corev1.ServiceList{},
		&corev1.Pod{}, &corev1.PodList{},
		&corev1.Node{}, &corev1.NodeList{},
		&corev1.Namespace{}, &corev1.NamespaceList{},
	)
	scheme.AddKnownTypes(schema.GroupVersion{Group: discoveryv1.GroupName, Version: runtime.APIVersionInternal},
		&discoveryv1.EndpointSlice{}, &discoveryv1.EndpointSliceList{},
	)
	// Pods may be selected by node, as kube-apiserver allows.
	utilruntime.Must(scheme.AddFieldLabelConversionFunc(corev1.SchemeGroupVersion.WithKind("Pod"),
		func(label, value string) (string, string, error) {
			switch label {
			case "metadata.name", "metadata.namespace", "spec.nodeName":
				return label, value, nil
			}
			return "", "", fmt.Errorf("%q is not a known field selector: only \"metadata.name\", \"metadata.namespace\", \"spec.nodeName\"", label)
		}))
	// The unversioned meta types every API server answers with (Status, discovery documents).
	metav1.AddToGroupVersion(scheme, schema.GroupVersion{Version: "v1"})
	scheme.AddUnversionedTypes(schema.GroupVersion{Group: "", Version: "v1"},
		&metav1.Status{}, &metav1.APIVersions{}, &metav1.APIGroupList{},
		&metav1.APIGroup{}, &metav1.APIResourceList{},
	)
}
