struct Greeter;

#[rodario::actor]
impl Greeter {
    pub fn greet<T: ToString>(&self, name: T) -> String {
        name.to_string()
    }
}

fn main() {}
