package main

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apiserver/pkg/registry/generic"
	genericregistry "k8s.io/apiserver/pkg/registry/generic/registry"
	"k8s.io/apiserver/pkg/registry/rest"
	"k8s.io/apiserver/pkg/storage"
	"k8s.io/apiserver/pkg/storage/names"
	"sigs.k8s.io/structured-merge-diff/v6/fieldpath"
)

// A resource the server serves: its names, scope, Go types, and how its spec and status are
// kept apart (nil when it has no status subresource).
type resource struct {
	group      string
	plural     string
	singular   string
	shortNames []string
	namespaced bool
	newObj     func() runtime.Object
	newList    func() runtime.Object
	// defaults fills what the real API server defaults and lb reads (may be nil).
	defaults func(obj runtime.Object)
	// copyStatus sets obj's status to from's (a zero `from` clears it); copySpec the spec.
	copyStatus func(obj, from runtime.Object)
	copySpec   func(obj, from runtime.Object)
	// attrs gives the labels and the fields a field selector may name (nil: the object
	// metadata's name and namespace only).
	attrs storage.AttrFunc
}

var resources = []resource{
	{
		plural: "services", singular: "service", shortNames: []string{"svc"}, namespaced: true,
		newObj:   func() runtime.Object { return &corev1.Service{} },
		newList:  func() runtime.Object { return &corev1.ServiceList{} },
		defaults: func(o runtime.Object) { defaultService(o.(*corev1.Service)) },
		copyStatus: func(o, from runtime.Object) {
			o.(*corev1.Service).Status = *from.(*corev1.Service).Status.DeepCopy()
		},
		copySpec: func(o, from runtime.Object) {
			o.(*corev1.Service).Spec = *from.(*corev1.Service).Spec.DeepCopy()
		},
	},
	{
		group: discoveryv1.GroupName, plural: "endpointslices", singular: "endpointslice", namespaced: true,
		newObj:   func() runtime.Object { return &discoveryv1.EndpointSlice{} },
		newList:  func() runtime.Object { return &discoveryv1.EndpointSliceList{} },
		defaults: func(o runtime.Object) { defaultEndpointSlice(o.(*discoveryv1.EndpointSlice)) },
	},
	{
		plural: "pods", singular: "pod", shortNames: []string{"po"}, namespaced: true,
		newObj:  func() runtime.Object { return &corev1.Pod{} },
		newList: func() runtime.Object { return &corev1.PodList{} },
		attrs:   podAttrs,
		copyStatus: func(o, from runtime.Object) {
			o.(*corev1.Pod).Status = *from.(*corev1.Pod).Status.DeepCopy()
		},
		copySpec: func(o, from runtime.Object) {
			o.(*corev1.Pod).Spec = *from.(*corev1.Pod).Spec.DeepCopy()
		},
	},
	{
		plural: "nodes", singular: "node", shortNames: []string{"no"},
		newObj:  func() runtime.Object { return &corev1.Node{} },
		newList: func() runtime.Object { return &corev1.NodeList{} },
		copyStatus: func(o, from runtime.Object) {
			o.(*corev1.Node).Status = *from.(*corev1.Node).Status.DeepCopy()
		},
		copySpec: func(o, from runtime.Object) {
			o.(*corev1.Node).Spec = *from.(*corev1.Node).Spec.DeepCopy()
		},
	},
	{
		plural: "namespaces", singular: "namespace", shortNames: []string{"ns"},
		newObj:  func() runtime.Object { return &corev1.Namespace{} },
		newList: func() runtime.Object { return &corev1.NamespaceList{} },
	},
}

// podAttrs adds `spec.nodeName` to the fields a pod list or watch may select on, as the real
// server does (kubelet and kube-proxy-like agents watch only their node's pods).
func podAttrs(obj runtime.Object) (labels.Set, fields.Set, error) {
	pod := obj.(*corev1.Pod)
	return labels.Set(pod.Labels), fields.Set{
		"metadata.name":      pod.Name,
		"metadata.namespace": pod.Namespace,
		"spec.nodeName":      pod.Spec.NodeName,
	}, nil
}

// defaultService fills the Service fields the real server defaults and a load balancer reads.
func defaultService(svc *corev1.Service) {
	if svc.Spec.Type == "" {
		svc.Spec.Type = corev1.ServiceTypeClusterIP
	}
	if svc.Spec.SessionAffinity == "" {
		svc.Spec.SessionAffinity = corev1.ServiceAffinityNone
	}
	for i := range svc.Spec.Ports {
		port := &svc.Spec.Ports[i]
		if port.Protocol == "" {
			port.Protocol = corev1.ProtocolTCP
		}
		if port.TargetPort == (intstr.IntOrString{}) {
			port.TargetPort = intstr.FromInt32(port.Port)
		}
	}
}

// defaultEndpointSlice fills the port protocols the real server defaults.
func defaultEndpointSlice(slice *discoveryv1.EndpointSlice) {
	for i := range slice.Ports {
		if slice.Ports[i].Protocol == nil {
			tcp := corev1.ProtocolTCP
			slice.Ports[i].Protocol = &tcp
		}
	}
}

func (r resource) groupResource() schema.GroupResource {
	return schema.GroupResource{Group: r.group, Resource: r.plural}
}

// strategy is the create/update/delete policy of one resource: the main endpoint keeps the
// status (clearing it on create), the status endpoint keeps the spec.
type strategy struct {
	runtime.ObjectTyper
	names.NameGenerator
	res    resource
	status bool
}

func (s strategy) NamespaceScoped() bool { return s.res.namespaced }

func (s strategy) PrepareForCreate(_ context.Context, obj runtime.Object) {
	if s.res.copyStatus != nil {
		s.res.copyStatus(obj, s.res.newObj())
	}
	if s.res.defaults != nil {
		s.res.defaults(obj)
	}
}

func (s strategy) PrepareForUpdate(_ context.Context, obj, old runtime.Object) {
	if s.status {
		s.res.copySpec(obj, old)
		return
	}
	if s.res.copyStatus != nil {
		s.res.copyStatus(obj, old)
	}
	if s.res.defaults != nil {
		s.res.defaults(obj)
	}
}

// Validation is the generic object-metadata check the registry already does; the server
// accepts any spec, like a fake, but stores and versions it like the real one.
func (s strategy) Validate(context.Context, runtime.Object) field.ErrorList { return nil }
func (s strategy) ValidateUpdate(context.Context, runtime.Object, runtime.Object) field.ErrorList {
	return nil
}
func (s strategy) WarningsOnCreate(context.Context, runtime.Object) []string { return nil }
func (s strategy) WarningsOnUpdate(context.Context, runtime.Object, runtime.Object) []string {
	return nil
}
func (s strategy) Canonicalize(runtime.Object)    {}
func (s strategy) AllowCreateOnUpdate() bool      { return false }
func (s strategy) AllowUnconditionalUpdate() bool { return true }

// GetResetFields names the fields server-side apply must not take from the request: the
// status on the main endpoint, the spec on the status endpoint.
func (s strategy) GetResetFields() map[fieldpath.APIVersion]*fieldpath.Set {
	if s.res.copyStatus == nil {
		return nil
	}
	reset := "status"
	if s.status {
		reset = "spec"
	}
	return map[fieldpath.APIVersion]*fieldpath.Set{
		fieldpath.APIVersion(s.res.apiVersion()): fieldpath.NewSet(fieldpath.MakePathOrDie(reset)),
	}
}

func (r resource) apiVersion() string {
	if r.group == "" {
		return "v1"
	}
	return r.group + "/v1"
}

// store is a resource's REST endpoint: the generic registry plus the short names kubectl
// resolves (`kubectl get svc`).
type store struct {
	*genericregistry.Store
	shortNames []string
}

func (s *store) ShortNames() []string { return s.shortNames }

// statusStore is the `/status` subresource: reads and updates through the status strategy.
type statusStore struct {
	store *genericregistry.Store
}

func (s *statusStore) New() runtime.Object { return s.store.New() }
func (s *statusStore) Destroy()            {}
func (s *statusStore) Get(ctx context.Context, name string, options *metav1.GetOptions) (runtime.Object, error) {
	return s.store.Get(ctx, name, options)
}
func (s *statusStore) Update(ctx context.Context, name string, objInfo rest.UpdatedObjectInfo,
	createValidation rest.ValidateObjectFunc, updateValidation rest.ValidateObjectUpdateFunc,
	_ bool, options *metav1.UpdateOptions) (runtime.Object, bool, error) {
	// Status updates never create.
	return s.store.Update(ctx, name, objInfo, createValidation, updateValidation, false, options)
}
func (s *statusStore) GetResetFields() map[fieldpath.APIVersion]*fieldpath.Set {
	return s.store.GetResetFields()
}

// newStorage builds a resource's endpoints on the shared etcd options (with the watch cache):
// `plural` and, when it has a status, `plural/status`.
func newStorage(res resource, optsGetter generic.RESTOptionsGetter) (map[string]rest.Storage, *genericregistry.Store, error) {
	main := strategy{ObjectTyper: scheme, NameGenerator: names.SimpleNameGenerator, res: res}
	gr := res.groupResource()
	s := &genericregistry.Store{
		NewFunc:                   res.newObj,
		NewListFunc:               res.newList,
		DefaultQualifiedResource:  gr,
		SingularQualifiedResource: schema.GroupResource{Group: res.group, Resource: res.singular},
		CreateStrategy:            main,
		UpdateStrategy:            main,
		DeleteStrategy:            main,
		ResetFieldsStrategy:       main,
		TableConvertor:            rest.NewDefaultTableConvertor(gr),
	}
	if err := s.CompleteWithOptions(&generic.StoreOptions{RESTOptions: optsGetter, AttrFunc: res.attrs}); err != nil {
		return nil, nil, err
	}
	out := map[string]rest.Storage{res.plural: &store{Store: s, shortNames: res.shortNames}}
	if res.copyStatus != nil {
		status := *s
		st := strategy{ObjectTyper: scheme, NameGenerator: names.SimpleNameGenerator, res: res, status: true}
		status.UpdateStrategy = st
		status.ResetFieldsStrategy = st
		out[res.plural+"/status"] = &statusStore{store: &status}
	}
	return out, s, nil
}
