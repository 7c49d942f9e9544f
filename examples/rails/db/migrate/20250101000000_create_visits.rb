class CreateVisits < ActiveRecord::Migration[7.2]
  def change
    create_table :visits do |t|
      t.string :path
      t.timestamps
    end
  end
end
