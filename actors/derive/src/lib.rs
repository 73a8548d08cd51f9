//! Derive macros for plexus-actors.
//!
//! `#[derive(RemoteMessage)]` makes a message enum (or struct) a wire-capable
//! `ractor::Message`: its fields are serialized with the plexus wire codec, so an
//! `ActorRef` to a remote actor of that message type can `cast` and `call` like a local one.
//! A field of type `RpcReplyPort<T>` makes that variant a call whose reply `T` travels back.

#![warn(missing_docs)]

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote};
use syn::{parse_macro_input, Data, DeriveInput, Fields, Type};

/// Implements `ractor::Message` with wire serialization for an enum or struct whose field
/// types implement `serde::Serialize` and `serde::de::DeserializeOwned`, except at most
/// one `RpcReplyPort<T>` field per variant (with `T` serializable too).
#[proc_macro_derive(RemoteMessage)]
pub fn derive_remote_message(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match expand(&input) {
        Ok(ts) => ts.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn is_reply_port(ty: &Type) -> bool {
    match ty {
        Type::Path(p) => p
            .path
            .segments
            .last()
            .is_some_and(|s| s.ident == "RpcReplyPort"),
        _ => false,
    }
}

/// One variant (or the struct itself): how to build and destructure it.
struct Shape {
    /// Path to construct/match, e.g. `Self::Ping` or `Self`.
    path: TokenStream2,
    fields: Fields,
}

fn variant_code(index: u32, shape: &Shape) -> syn::Result<(TokenStream2, TokenStream2)> {
    let path = &shape.path;
    let mut binds = Vec::new();
    let mut reply: Option<syn::Ident> = None;
    let mut puts = Vec::new();
    let mut reads = Vec::new();
    let named = matches!(shape.fields, Fields::Named(_));
    for (i, f) in shape.fields.iter().enumerate() {
        let bind = f.ident.clone().unwrap_or_else(|| format_ident!("f{}", i));
        if is_reply_port(&f.ty) {
            if reply.is_some() {
                return Err(syn::Error::new_spanned(
                    &f.ty,
                    "a message variant may hold at most one RpcReplyPort",
                ));
            }
            reply = Some(bind.clone());
            reads.push((bind.clone(), quote! { __p::typed_reply(__reply.take())? }));
        } else {
            puts.push(quote! { __p::put(&#bind, &mut __b)?; });
            reads.push((bind.clone(), quote! { __r.read()? }));
        }
        binds.push(bind);
    }
    let pattern = match &shape.fields {
        Fields::Named(_) => quote! { #path { #(#binds),* } },
        Fields::Unnamed(_) => quote! { #path ( #(#binds),* ) },
        Fields::Unit => quote! { #path },
    };
    let finish = match &reply {
        Some(r) => quote! { Ok(__p::call(__b, #r)) },
        None => quote! { Ok(__p::cast(__b)) },
    };
    let ser = quote! {
        #pattern => {
            let mut __b = ::std::vec::Vec::new();
            __p::put(&#index, &mut __b)?;
            #(#puts)*
            #finish
        }
    };
    let lets = reads.iter().map(|(b, e)| quote! { let #b = #e; });
    let build = match &shape.fields {
        Fields::Named(_) if named => quote! { #path { #(#binds),* } },
        Fields::Unnamed(_) => quote! { #path ( #(#binds),* ) },
        _ => quote! { #path },
    };
    let de = quote! {
        #index => {
            #(#lets)*
            __r.finish()?;
            Ok(#build)
        }
    };
    Ok((ser, de))
}

fn expand(input: &DeriveInput) -> syn::Result<TokenStream2> {
    if !input.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &input.generics,
            "RemoteMessage does not support generic messages",
        ));
    }
    let name = &input.ident;
    let shapes: Vec<Shape> = match &input.data {
        Data::Enum(e) => e
            .variants
            .iter()
            .map(|v| {
                let id = &v.ident;
                Shape {
                    path: quote! { Self::#id },
                    fields: v.fields.clone(),
                }
            })
            .collect(),
        Data::Struct(s) => vec![Shape {
            path: quote! { Self },
            fields: s.fields.clone(),
        }],
        Data::Union(_) => {
            return Err(syn::Error::new(
                Span::call_site(),
                "RemoteMessage supports enums and structs",
            ))
        }
    };
    let mut sers = Vec::new();
    let mut des = Vec::new();
    for (i, s) in shapes.iter().enumerate() {
        let (a, b) = variant_code(i as u32, s)?;
        sers.push(a);
        des.push(b);
    }
    Ok(quote! {
        impl ::plexus_actors::__private::ractor::Message for #name {
            fn serializable() -> bool {
                true
            }

            fn serialize(
                self,
            ) -> ::std::result::Result<
                ::plexus_actors::__private::SerializedMessage,
                ::plexus_actors::__private::BoxedDowncastErr,
            > {
                use ::plexus_actors::__private as __p;
                match self {
                    #(#sers)*
                }
            }

            #[allow(unused_mut, unused_variables)]
            fn deserialize(
                __m: ::plexus_actors::__private::SerializedMessage,
            ) -> ::std::result::Result<Self, ::plexus_actors::__private::BoxedDowncastErr> {
                use ::plexus_actors::__private as __p;
                let (__args, mut __reply) = __p::split(__m)?;
                let mut __r = __p::Reader::new(&__args);
                let __v: u32 = __r.read()?;
                match __v {
                    #(#des)*
                    _ => Err(__p::BoxedDowncastErr),
                }
            }
        }
    })
}
